"""Fresh-image Grad-CAM load from several client processes, and the GPU's busy share.

One Python client process cannot send requests as fast as a GPU explains them,
so the load comes from ``clients`` processes of a ``ClientPool`` (spawned once:
no fork after gRPC or CUDA started), each with ``concurrency`` asyncio callers,
for ``duration_s`` seconds, all starting once every one has built its requests.
Every request is a cache miss on an image never sent before:

- ``jpeg``: a pool of distinct JPEG pictures, each request's bytes made unique
  by a counter after the JPEG end marker. Decoders stop at the marker, so the
  server decodes a real picture, but the bytes (and so the cache key) differ;
- ``tensor``: the preprocessed float32 ``(3, H, W)`` input, one element nudged
  per request (``1e-3 * i``), so that no two tensors hash alike.

Requests are serialised before the clock starts. Every ``SAMPLE_EVERY``-th
reply is parsed for the server's own timings (decode, queue, compute, total),
which say where the time went.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from grpc import aio

from camserve import tensors
from camserve.v1 import explain_pb2 as pb

from .inputs import InputKind, jpeg_images
from .loadgen import build_request

EXPLAIN_PATH = "/camserve.v1.ExplainService/Explain"
SAMPLE_EVERY = 16
TIMING_FIELDS = ("decode_ms", "queue_ms", "compute_ms", "total_ms")


@dataclass(frozen=True)
class LoadPlan:
    """What each client process sends: ``pool`` fresh requests of ``kind`` at most, from
    ``concurrency`` callers over ``channels`` connections (so that the kernel can spread
    them over the processes of a ``--processes N`` server)."""

    address: str
    model: str
    kind: InputKind
    size: int
    pool: int
    concurrency: int
    duration_s: float
    channels: int = 4
    method: str = "gradcam"


@dataclass
class ClientFigures:
    """One client process's answered and failed requests, its latencies and timings."""

    answered: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=dict)


def fresh_requests(plan: LoadPlan, seed: int) -> list[bytes]:
    """``plan.pool`` serialised ``Explain`` requests, no two on the same input bytes."""
    base = jpeg_images(min(plan.pool, 64), plan.size, seed=seed)
    requests = []
    for i in range(plan.pool):
        picture = base[i % len(base)]
        if plan.kind == "jpeg":
            source = pb.ImageInput(encoded=picture + b"camserve-bench-%d-%d" % (seed, i))
        else:
            source = pb.ImageInput(tensor=tensors.to_proto(_nudged(picture, plan.size, i)))
        requests.append(build_request(plan.model, plan.method, source).SerializeToString())
    return requests


def _nudged(picture: bytes, size: int, index: int) -> np.ndarray:
    from camserve_server.models.imaging import Preprocess, decode_image

    x, _ = Preprocess(input_size=(size, size))(decode_image(picture))
    array: np.ndarray = x.numpy().astype(np.float32, copy=True)
    array[0, 0, 0] += 1e-3 * (index + 1)
    return array


async def _drive(plan: LoadPlan, requests: list[bytes]) -> ClientFigures:
    figures = ClientFigures(timings={name: [] for name in TIMING_FIELDS})
    todo = iter(range(len(requests)))
    options = [
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.use_local_subchannel_pool", 1),  # a connection per channel
    ]
    channels = [aio.insecure_channel(plan.address, options=options) for _ in range(plan.channels)]
    try:
        for channel in channels:
            await channel.channel_ready()
        deadline = time.perf_counter() + plan.duration_s

        async def caller(number: int) -> None:
            explain = channels[number % len(channels)].unary_unary(EXPLAIN_PATH)  # bytes
            for index in todo:
                if time.perf_counter() >= deadline:
                    return
                started = time.perf_counter()
                try:
                    reply = await explain(requests[index], timeout=120)
                except grpc.RpcError:
                    figures.errors += 1
                    continue
                figures.latencies_ms.append((time.perf_counter() - started) * 1e3)
                figures.answered += 1
                if index % SAMPLE_EVERY == 0:
                    timings = pb.ExplainResponse.FromString(reply).timings
                    for name in TIMING_FIELDS:
                        figures.timings[name].append(getattr(timings, name))

        started = time.perf_counter()
        await asyncio.gather(*(caller(number) for number in range(plan.concurrency)))
        figures.elapsed_s = time.perf_counter() - started
    finally:
        for channel in channels:
            await channel.close()
    return figures


_started: Any = None  # per client process: the count of clients ready, and the start signal
_go: Any = None


def _init_client(started: Any, go: Any) -> None:
    global _started, _go
    _started, _go = started, go


def _client(plan: LoadPlan, seed: int) -> ClientFigures:
    requests = fresh_requests(plan, seed)
    with _started.get_lock():
        _started.value += 1
    _go.wait()  # every client has built its requests
    return asyncio.run(_drive(plan, requests))


class ClientPool:
    """Client processes, spawned once for a whole benchmark run (each spawn imports the
    benchmark and torch again), started together on every load."""

    def __init__(self, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.size = size
        self._started = context.Value("i", 0)
        self._go = context.Event()
        self._pool = context.Pool(size, _init_client, (self._started, self._go))

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._pool.terminate()
        self._pool.join()

    def run(self, plan: LoadPlan, clients: int, seed: int = 0) -> dict[str, Any]:
        """Drive ``plan`` from ``clients`` of the processes at once; the merged figures."""
        if clients > self.size:
            raise ValueError(f"{clients} clients asked of a pool of {self.size}")
        self._go.clear()
        with self._started.get_lock():
            self._started.value = 0
        pending = self._pool.starmap_async(
            _client, [(plan, seed * 1000 + c) for c in range(clients)]
        )
        deadline = time.monotonic() + 600
        while self._started.value < clients and not pending.ready():
            if time.monotonic() > deadline:
                raise TimeoutError("the clients did not build their requests in 600 s")
            time.sleep(0.05)
        self._go.set()
        runs: list[ClientFigures] = pending.get(timeout=plan.duration_s + 600)
        return merge(runs, plan, clients)


def merge(runs: list[ClientFigures], plan: LoadPlan, clients: int) -> dict[str, Any]:
    """Requests per second over the longest client, latency percentiles, server timings."""
    answered = sum(r.answered for r in runs)
    elapsed = max(r.elapsed_s for r in runs) if runs else 0.0
    latencies = [ms for r in runs for ms in r.latencies_ms]
    server = {
        name: _median([v for r in runs for v in r.timings.get(name, [])]) for name in TIMING_FIELDS
    }
    return {
        "input": plan.kind,
        "rps": answered / elapsed if elapsed else 0.0,
        "answered": answered,
        "errors": sum(r.errors for r in runs),
        "elapsed_s": elapsed,
        "clients": clients,
        "concurrency": clients * plan.concurrency,
        "p50_ms": float(np.percentile(latencies, 50)) if latencies else float("nan"),
        "p99_ms": float(np.percentile(latencies, 99)) if latencies else float("nan"),
        "server_p50_ms": server,
        "pool_spent": any(r.answered + r.errors >= plan.pool for r in runs),
    }


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class GpuSampler:
    """``nvidia-smi`` read every ``interval_ms`` in the background: the GPU's busy share
    and memory in use. Without ``nvidia-smi`` (CPU runs) it records nothing."""

    def __init__(self, interval_ms: int = 200) -> None:
        self.interval_ms = interval_ms
        self.busy: list[float] = []
        self.memory_mib: list[float] = []
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        binary = shutil.which("nvidia-smi")
        if binary is None:
            return self
        self._process = subprocess.Popen(
            [
                binary,
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
                f"--loop-ms={self.interval_ms}",
                "--id=0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            parts = [part.strip() for part in line.split(",")]
            try:
                busy, memory = float(parts[0]), float(parts[1])
            except (ValueError, IndexError):
                continue
            self.busy.append(busy)
            self.memory_mib.append(memory)

    def __exit__(self, *_exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def summary(self) -> dict[str, float] | None:
        """Mean and peak busy percentage and peak memory (MiB); ``None`` without samples."""
        if not self.busy:
            return None
        return {
            "busy_mean_pct": statistics.fmean(self.busy),
            "busy_max_pct": max(self.busy),
            "memory_max_mib": max(self.memory_mib),
            "samples": float(len(self.busy)),
        }
