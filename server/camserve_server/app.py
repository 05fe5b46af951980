"""``build_server(settings) -> (server, port)``: the gRPC server with everything attached.

Health (``grpc.health.v1``; SERVING only once every model has warmed up),
reflection, error and auth interceptors, TLS, message caps and a maximum
connection age so a scaled-out deployment rebalances. ``Runtime`` owns the
models, the cache, the batcher and the device workers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import torch
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from camserve.v1 import (
    evaluate_pb2,
    evaluate_pb2_grpc,
    explain_pb2,
    explain_pb2_grpc,
    imagesets_pb2,
    imagesets_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
)

from .config import ModelSpec, Settings
from .errors import FailedPrecondition
from .evaluation.service import EvaluationService
from .evaluation.servicer import EvaluateServicer
from .imagesets.service import ImageSetService
from .imagesets.servicer import ImageSetServicer
from .jobs.service import JobService
from .jobs.servicer import VisualizeServicer
from .jobs.slots import JobSlots
from .methods import METHODS
from .models import ExplainableModel
from .models.loading import LoadedModel, load_model
from .rpc.interceptors import AuthInterceptor, ErrorInterceptor
from .runtime.activation_cache import ActivationCache
from .runtime.batcher import Batcher
from .runtime.cache import build_cache
from .runtime.intra_op import ThreadPolicy
from .runtime.metrics import Metrics
from .runtime.precision import autocast_dtype, exact_float32_on_cuda, precision_name
from .runtime.workers import DeviceWorker
from .service import ExplainService
from .servicer import ExplainServicer

log = logging.getLogger(__name__)

SERVICE_NAME = explain_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name
IMAGESETS_NAME = imagesets_pb2.DESCRIPTOR.services_by_name["ImageSetService"].full_name
JOBS_NAME = jobs_pb2.DESCRIPTOR.services_by_name["VisualizeService"].full_name
EVALUATE_NAME = evaluate_pb2.DESCRIPTOR.services_by_name["EvaluateService"].full_name


def resolve_devices(spec: str) -> list[torch.device]:
    """``auto``: every CUDA GPU, else the CPU; or an explicit comma-separated list."""
    if spec == "auto":
        count = torch.cuda.device_count()
        return [torch.device(f"cuda:{i}") for i in range(count)] or [torch.device("cpu")]
    return [torch.device(part.strip()) for part in spec.split(",") if part.strip()]


@dataclass
class Runtime:
    """Everything behind the RPCs; started by ``build_server``, stopped by ``stop``."""

    settings: Settings
    metrics: Metrics
    models: dict[str, LoadedModel]
    cache: ActivationCache
    batcher: Batcher
    workers: list[DeviceWorker]
    service: ExplainService
    imagesets: ImageSetService
    jobs: JobService
    evaluations: EvaluationService
    health: health.aio.HealthServicer
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_workers(self) -> None:
        for worker in self.workers:
            self.tasks.append(asyncio.create_task(worker.run(), name=f"worker-{worker.device}"))

    async def warm_up(self) -> None:
        """Run every model once per device, then report SERVING."""
        loop = asyncio.get_running_loop()
        for loaded in self.models.values():
            for replica in loaded.replicas.values():
                x = torch.zeros(1, 3, *replica.input_size, device=replica.device)
                await loop.run_in_executor(None, _forward_once, replica, x)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        self.batcher.close()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.service.close()
        self.imagesets.close()
        self.cache.close()


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """grpc's asyncio health service, with every RPC of its proto served by a coroutine.

    ``List`` is in ``grpc.health.v1``'s proto (so it is registered and listed by
    reflection) but grpcio-health-checking leaves it to the generated synchronous stub,
    which the error interceptor cannot guard: a malformed request got UNKNOWN and every
    call logged a traceback. It answers UNIMPLEMENTED, as the stub meant to.
    """

    async def List(  # noqa: N802 (the RPC's name)
        self, request: health_pb2.HealthListRequest, context: aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "Health/List is not served: use Check or Watch"
        )


def _forward_once(model: ExplainableModel, x: torch.Tensor) -> None:
    with torch.inference_mode():
        model.forward(x)


def demo_model_spec() -> ModelSpec:
    """The shipped demo model: the embedded default when no config names models."""
    from . import demo

    return ModelSpec(
        name="demo",
        arch="camserve_server.demo.model:build_demo_model",
        weights=str(demo.WEIGHTS_PATH),
        input_size=demo.INPUT_SIZE,
        mean=demo.MEAN,
        std=demo.STD,
        labels=str(demo.LABELS_PATH),
    )


def build_runtime(settings: Settings) -> Runtime:
    """Load the models on every device and wire the batcher, cache and workers."""
    metrics = Metrics()
    devices = resolve_devices(settings.devices)
    autocast = autocast_dtype(settings.precision, devices)  # refuses float16 on a CPU
    if any(device.type == "cuda" for device in devices):
        exact_float32_on_cuda()
    specs: tuple[ModelSpec, ...] = settings.models or (demo_model_spec(),)
    budget = settings.memory_budget_mb * (1 << 20)
    models = {
        spec.name: load_model(spec, devices, budget, channels_last=settings.use_channels_last)
        for spec in specs
    }
    metrics.known_names(models, METHODS)
    store = build_cache(settings, observer=metrics, models=models.values())
    cache = ActivationCache(store, precision_name(settings.precision))
    batcher = Batcher(
        max_batch_size=settings.max_batch_size,
        heavy_batch_size=settings.heavy_batch_size,
        max_delay_s=settings.max_delay_ms / 1e3,
        queue_size=settings.queue_size,
        on_depth=metrics.queue_depth.set,
    )
    threads = ThreadPolicy()  # the intra-op team, read once, shared by decode and workers
    workers = [
        DeviceWorker(
            device,
            {name: loaded.replicas[str(device)] for name, loaded in models.items()},
            batcher,
            metrics,
            cache,
            autocast=autocast,
            threads=threads,
        )
        for device in devices
    ]

    def least_busy_worker() -> DeviceWorker:
        """The device worker with the fewest batches and steps queued or running."""
        return min(workers, key=lambda worker: worker.pending)

    imagesets = ImageSetService(settings, models, least_busy_worker, metrics)
    slots = JobSlots(settings.max_jobs, metrics)  # optimisation jobs and evaluations
    return Runtime(
        settings=settings,
        metrics=metrics,
        models=models,
        cache=cache,
        batcher=batcher,
        workers=workers,
        service=ExplainService(settings, models, batcher, cache, metrics, threads),
        imagesets=imagesets,
        jobs=JobService(settings, models, least_busy_worker, metrics, slots),
        evaluations=EvaluationService(
            settings, models, least_busy_worker, slots, imagesets.kept_pictures
        ),
        health=HealthServicer(),
    )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials (mTLS when a client CA is configured), or None for plaintext."""
    if not settings.tls_enabled:
        return None
    assert settings.tls_cert and settings.tls_key
    key = Path(settings.tls_key).read_bytes()
    cert = Path(settings.tls_cert).read_bytes()
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_options(settings: Settings, *, reuse_port: bool = False) -> list[tuple[str, int]]:
    """Message caps and connection lifetime shared by every listener; ``reuse_port`` lets
    several server processes bind one port (``processes.py``)."""
    age_ms = int(settings.max_connection_age_s * 1000)
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_connection_age_ms", age_ms),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.so_reuseport", int(reuse_port)),
    ]


async def build_server(
    settings: Settings, *, reuse_port: bool = False
) -> tuple[aio.Server, int, Runtime]:
    """Build and start the server; returns it, its bound port and the runtime behind it.

    ``reuse_port``: bind with ``SO_REUSEPORT``, beside the other processes of a supervisor.
    """
    runtime = build_runtime(settings)
    # Errors and metrics outermost: every call, refused by auth or not, is recorded with
    # the status its caller got.
    interceptors: list[aio.ServerInterceptor] = [ErrorInterceptor(runtime.metrics)]
    if settings.auth_enabled:
        interceptors.append(
            AuthInterceptor(settings.auth_tokens, open_reflection=settings.reflection_without_auth)
        )
    server = aio.server(
        interceptors=interceptors, options=channel_options(settings, reuse_port=reuse_port)
    )
    # Each service: a servicer (protobuf <-> domain) over its protobuf-free service.
    explain_pb2_grpc.add_ExplainServiceServicer_to_server(
        ExplainServicer(runtime.service, runtime.metrics), server
    )
    imagesets_pb2_grpc.add_ImageSetServiceServicer_to_server(
        ImageSetServicer(runtime.imagesets), server
    )
    jobs_pb2_grpc.add_VisualizeServiceServicer_to_server(VisualizeServicer(runtime.jobs), server)
    evaluate_pb2_grpc.add_EvaluateServiceServicer_to_server(
        EvaluateServicer(runtime.evaluations), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(runtime.health, server)
    await runtime.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await runtime.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            IMAGESETS_NAME,
            JOBS_NAME,
            EVALUATE_NAME,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc raises where older versions returned 0
        port = 0
    if port == 0:
        raise FailedPrecondition(f"cannot listen on {address} (--port): in use or not local")
    await server.start()
    runtime.start_workers()
    await runtime.warm_up()
    log.info(
        "camserve listening on %s (port %d), models: %s", settings.host, port, list(runtime.models)
    )
    return server, port, runtime


async def shutdown(server: aio.Server, runtime: Runtime, grace_s: float) -> None:
    """Graceful stop: NOT_SERVING, refuse new calls, let in-flight calls finish."""
    await runtime.health.enter_graceful_shutdown()
    await server.stop(grace_s)
    await runtime.stop()
