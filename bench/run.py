"""``make bench``: camserve against the model's own speed and the libraries people use today.

Every figure is a ratio against a baseline measured in this same run, on this
device and model. ``--quick`` runs tiny settings (the test suite uses it to check
the harness works; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
import torchvision

from camserve import tensors
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc
from camserve_server import config as config_module
from camserve_server.config import Settings, load_config_file
from camserve_server.inprocess import ServerThread
from camserve_server.methods.chunking import rows_per_pass
from camserve_server.models.imaging import Preprocess, decode_image

from . import baselines, forward_only, onnx_runtime, precision
from .frontend import frontend_rates
from .inputs import INPUT_KINDS, FreshInputs, InputKind, image_inputs, jpeg_images
from .latency import cache_pairs, overhead
from .loadgen import build_request, run_load
from .memory import MemoryCase, peak_memory
from .report import ratios, table

CONFIG = """
[[models]]
name = "bench"
{source} = "{value}"
input_size = [{size}, {size}]
"""
MODEL = "bench"


def start_server(
    args: argparse.Namespace, folder: Path, *, onnx: Path | None = None, **overrides: Any
) -> ServerThread:
    """A server of ``args.arch`` (seeded random weights) on ``args.device``, or of the
    ONNX file ``onnx``."""
    config = folder / "bench.toml"
    source, value = ("onnx", onnx.name) if onnx is not None else ("arch", args.arch)
    config.write_text(CONFIG.format(source=source, value=value, size=args.size))
    _, models = load_config_file(config)
    base = Settings(port=0, metrics_port=-1, devices=args.device)
    settings = replace(base, models=models, **overrides)
    thread = ServerThread(settings)
    thread.start()
    return thread


def batch_sizes(thread: ServerThread, method: str) -> dict[str, float]:
    assert thread.runtime is not None
    registry = thread.runtime.metrics.registry
    labels = {"model": MODEL, "method": method}
    count = registry.get_sample_value("camserve_batch_size_count", labels) or 0.0
    total = registry.get_sample_value("camserve_batch_size_sum", labels) or 0.0
    buckets = {}
    previous = 0.0
    for bound in (1, 2, 4, 8, 16, 32, 64):
        value = registry.get_sample_value(
            "camserve_batch_size_bucket", {**labels, "le": str(float(bound))}
        )
        value = value or 0.0
        buckets[f"<={bound}"] = value - previous
        previous = value
    return {"mean": total / count if count else 0.0, **buckets}


def _cache_counts(thread: ServerThread) -> tuple[float, float]:
    """Cache hits (any tier) and look-ups (each reaches the memory tier first) so far, from
    the server's ``camserve_cache_hits_total`` and ``camserve_cache_misses_total``."""
    assert thread.runtime is not None
    registry = thread.runtime.metrics.registry

    def value(name: str, tier: str) -> float:
        return registry.get_sample_value(name, {"tier": tier}) or 0.0

    hits = value("camserve_cache_hits_total", "memory") + value(
        "camserve_cache_hits_total", "redis"
    )
    lookups = value("camserve_cache_hits_total", "memory") + value(
        "camserve_cache_misses_total", "memory"
    )
    return hits, lookups


def baseline_model(arch: str, device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(0)  # the same weights the server builds
    model: torch.nn.Module = torchvision.models.get_model(arch, weights=None)
    return model.eval().to(device)


def served_maps(
    address: str, method: str, images: list[bytes], options: dict[str, float]
) -> tuple[float, list[np.ndarray]]:
    """Seconds per image of ``method`` served one request at a time, and its heatmaps."""
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    stub = explain_pb2_grpc.ExplainServiceStub(channel)
    maps = []
    requests = [build_request(MODEL, method, image, options) for image in images]
    started = time.perf_counter()
    for request in requests:
        reply = stub.Explain(request, timeout=1800)
        maps.append(tensors.from_proto(reply.heatmaps[0].map, copy=True))
    seconds = (time.perf_counter() - started) / len(images)
    channel.close()
    return seconds, maps


def _load(
    thread: ServerThread, args: argparse.Namespace, fresh: FreshInputs, kind: InputKind
) -> dict[str, Any]:
    hits_before, lookups_before = _cache_counts(thread)
    load = asyncio.run(
        run_load(
            thread.address,
            MODEL,
            ["gradcam"],
            fresh,
            concurrency=args.concurrency,
            requests=None if args.duration else args.requests,
            duration_s=args.duration,
            repeat_share=args.repeat_share,
            input_kind=kind,
        )
    )
    hits, lookups = _cache_counts(thread)
    lookups -= lookups_before
    return {
        **load.summary(),
        "server_cache_hit_rate": (hits - hits_before) / lookups if lookups else float("nan"),
        "inputs_made_during_run": fresh.made_during_run,
    }


def max_diff(maps: list[np.ndarray], reference: list[np.ndarray]) -> float:
    return max(float(np.abs(a - b).max()) for a, b in zip(maps, reference, strict=True))


def _server_loads_onnx() -> bool:
    """Whether this server's config accepts ``onnx = "m.onnx"`` models."""
    return "onnx" in getattr(config_module, "MODEL_SOURCES", ())


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument(
        "--device",
        default="cuda:0" if torch.cuda.is_available() else "cpu",
        help="where the server and every baseline run (cpu, cuda:0); peak memory and "
        "onnxruntime are measured on the CPU only",
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--requests", type=int, default=96, help="requests in the load run")
    parser.add_argument(
        "--duration", type=float, default=None, help="run the load for S seconds instead"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--input", choices=INPUT_KINDS, default="jpeg", help="load run's input")
    parser.add_argument(
        "--repeat-share", type=float, default=0.0, help="share of load requests on seen images"
    )
    parser.add_argument("--library-requests", type=int, default=12)
    parser.add_argument("--perturbation-images", type=int, default=2)
    parser.add_argument(
        "--memory-budgets", default="1024,256", help="budgets (MiB) for the memory section"
    )
    parser.add_argument(
        "--scorecam-layer", default="layer1", help="Score-CAM's layer in the memory section"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings: checks the harness runs"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.arch, args.size, args.concurrency = "resnet18", 64, 4
        args.requests = min(args.requests, 12)
        args.duration = min(args.duration, 2.0) if args.duration else None
        args.library_requests, args.perturbation_images = 3, 1
    return args


def part_sizes(pool: int, perturbation_images: int) -> dict[str, int]:
    """How many distinct images each part of the run uses (no image serves two parts)."""
    return {
        "warmup": 8,
        "load": pool,
        "unbatched": pool,
        "bfloat16": pool,
        "cache_jpeg": 8,
        "cache_tensor": 8,
        "overhead_jpeg": 16,
        "overhead_tensor": 16,
        "perturb": perturbation_images,
        "forward_only": 2,  # a warm-up image, then the measured one
    }


@dataclass
class Workload:
    """The run's images, split so no cold measurement ever sees an image twice."""

    args: argparse.Namespace
    preprocess: Preprocess
    images: list[bytes]
    pool: int

    @property
    def kind(self) -> InputKind:
        kind: InputKind = self.args.input
        return kind

    def part(self, name: str) -> list[bytes]:
        """Disjoint slices: warm-up, the load pools, cache pairs, overhead, perturbation."""
        sizes = part_sizes(self.pool, self.args.perturbation_images)
        start = 0
        for key, size in sizes.items():
            if key == name:
                return self.images[start : start + size]
            start += size
        raise KeyError(name)

    def inputs(self, name: str, kind: InputKind | None = None) -> list[pb.ImageInput]:
        return image_inputs(self.part(name), kind or self.kind, self.preprocess)

    def fresh(self, name: str) -> FreshInputs:
        return FreshInputs(self.inputs(name), self.kind, self.preprocess, self.args.size)


def _batched_section(
    work: Workload, folder: Path, results: dict[str, Any]
) -> tuple[list[np.ndarray], dict[str, dict[str, Any]]]:
    """Load, cache, overhead and served perturbation methods on the default server;
    returns the served occlusion maps and the forward-only answers (the ONNX parity
    references)."""
    args = work.args
    occlusion = occlusion_options(args)
    server = start_server(args, folder)
    try:
        asyncio.run(run_load(server.address, MODEL, ["gradcam"], work.inputs("warmup"),
                             concurrency=4, requests=8))  # fmt: skip
        results["gradcam"] = {
            **_load(server, args, work.fresh("load"), work.kind),
            "batch_size": batch_sizes(server, "gradcam"),
        }
        results["cache"] = {
            kind: cache_pairs(server.address, MODEL, work.inputs(f"cache_{kind}", kind))
            for kind in INPUT_KINDS
        }
        results["overhead"] = {
            kind: overhead(server.address, MODEL, work.inputs(f"overhead_{kind}", kind))
            for kind in INPUT_KINDS
        }
        results["frontend"] = frontend_rates(
            server.address,
            MODEL,
            work.inputs("cache_jpeg", "jpeg"),
            duration_s=1.0 if args.quick else 5.0,
        )
        seconds, maps = served_maps(server.address, "occlusion", work.part("perturb"), occlusion)
        full = {**occlusion, "incremental": 0.0}  # every copy a full forward pass
        full_seconds, full_maps = served_maps(
            server.address, "occlusion", work.part("perturb"), full
        )
        results["occlusion"] = {
            "camserve_s_per_image": seconds,
            "camserve_full_passes_s_per_image": full_seconds,
            "incremental_max_abs_diff_vs_full_passes": max_diff(maps, full_maps),
        }
        seconds, _ = served_maps(server.address, "integrated_gradients", work.part("perturb"), {})
        results["integrated_gradients"] = {"camserve_s_per_image": seconds}
        eager_forward_only = forward_only.served(
            server.address, MODEL, work.part("forward_only"), args.scorecam_layer
        )
        assert server.runtime is not None
        results["occlusion"]["chunk"] = rows_per_pass(server.runtime.models[MODEL].primary)
    finally:
        server.stop()
    single = start_server(args, folder, max_batch_size=1)
    try:
        results["gradcam_unbatched"] = _load(single, args, work.fresh("unbatched"), work.kind)
    finally:
        single.stop()
    mixed = start_server(args, folder, precision="bfloat16")
    try:
        results["gradcam_bfloat16"] = _load(mixed, args, work.fresh("bfloat16"), work.kind)
    finally:
        mixed.stop()
    return maps, eager_forward_only


def _baseline_section(
    work: Workload, model: torch.nn.Module, results: dict[str, Any]
) -> list[torch.Tensor]:
    """The model's own speed and the libraries; returns the perturbation inputs."""
    args, size = work.args, work.args.size
    batch = max(1, round(results["gradcam"]["batch_size"]["mean"]))
    nhwc = baseline_model(args.arch, args.device).to(memory_format=torch.channels_last)
    results["model"].update(
        batch=batch,
        forward_ips=baselines.forward_throughput(model, batch, size),
        forward_channels_last_ips=baselines.forward_throughput(nhwc, batch, size),
        forward_backward_ips=baselines.forward_backward_throughput(model, batch, size),
    )
    results["pytorch_grad_cam_rps"] = baselines.pytorch_grad_cam_rate(
        model,
        model.get_submodule("layer4"),
        work.part("load")[: args.library_requests],
        work.preprocess,
    )
    inputs = [work.preprocess(decode_image(data))[0] for data in work.part("perturb")]
    window, stride = _window_stride(args)
    results["occlusion"]["captum_s_per_image"] = baselines.captum_occlusion_seconds(
        model, inputs, window, stride
    )
    results["integrated_gradients"]["captum_s_per_image"] = (
        baselines.captum_integrated_gradients_seconds(model, inputs)
    )
    return inputs


def _onnx_section(
    work: Workload,
    model: torch.nn.Module,
    inputs: list[torch.Tensor],
    references: tuple[list[np.ndarray], dict[str, dict[str, Any]]],
    folder: Path,
    results: dict[str, Any],
) -> None:
    """onnxruntime: forward throughput, and occlusion served on the ONNX model when the
    server loads ONNX (with the other forward-only methods), else run by the
    engine-equivalent loop."""
    eager_maps, eager_forward_only = references
    args = work.args
    window, stride = _window_stride(args)
    path = onnx_runtime.export(model, args.size, folder)
    session = onnx_runtime.session(path, torch.get_num_threads())
    chunk = results["occlusion"]["chunk"]
    loop_seconds, loop_maps = onnx_runtime.occlusion_seconds(session, inputs, window, stride, chunk)
    ort: dict[str, Any] = {
        "forward_ips": onnx_runtime.forward_throughput(
            session, results["model"]["batch"], args.size
        ),
        "occlusion_s_per_image": loop_seconds,
        "occlusion_chunk": chunk,
        "occlusion_served_on_onnx": False,
        "occlusion_max_abs_diff_vs_camserve": max_diff(loop_maps, eager_maps),
    }
    if _server_loads_onnx():
        server = start_server(args, folder, onnx=path)
        try:
            seconds, maps = served_maps(
                server.address, "occlusion", work.part("perturb"), occlusion_options(args)
            )
            assert server.runtime is not None
            served_chunk = rows_per_pass(server.runtime.models[MODEL].primary)
            onnx_forward_only = forward_only.served(
                server.address, MODEL, work.part("forward_only"), args.scorecam_layer
            )
        finally:
            server.stop()
        results["forward_only"] = forward_only.compare(eager_forward_only, onnx_forward_only)
        ort.update(
            occlusion_served_on_onnx=True,
            occlusion_loop_s_per_image=loop_seconds,
            occlusion_s_per_image=seconds,
            occlusion_chunk=served_chunk,
            occlusion_max_abs_diff_vs_camserve=max_diff(maps, eager_maps),
        )
    results["onnxruntime"] = ort


def _window_stride(args: argparse.Namespace) -> tuple[int, int]:
    return (16, 16) if args.quick else (32, 16)


def occlusion_options(args: argparse.Namespace) -> dict[str, float]:
    """Served occlusion's options: the default path (incremental inference, exact)."""
    window, stride = _window_stride(args)
    return {"window": float(window), "stride": float(stride)}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    threads = torch.get_num_threads()
    results: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": threads,
            "torch": torch.__version__,
            "device": args.device,
            "load_average": os.getloadavg(),
        },
        "model": {"arch": args.arch, "input": args.size},
        "settings": {
            "input": args.input,
            "mode": "duration" if args.duration else "requests",
            "duration_s": args.duration,
            "requests": None if args.duration else args.requests,
            "concurrency": args.concurrency,
        },
    }
    pool = args.requests if not args.duration else max(args.requests, 64)
    work = Workload(
        args,
        Preprocess(input_size=(args.size, args.size)),
        jpeg_images(sum(part_sizes(pool, args.perturbation_images).values()), args.size, seed=1),
        pool,
    )
    model = baseline_model(args.arch, args.device)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        references = _batched_section(work, folder, results)
        inputs = _baseline_section(work, model, results)
        if args.device == "cpu":  # onnxruntime's CPU provider against CPU baselines only
            _onnx_section(work, model, inputs, references, folder, results)
    batch = results["model"]["batch"]
    batch_x = torch.stack([work.preprocess(decode_image(d))[0] for d in work.part("load")[:batch]])
    results["precision"] = precision.compare(model, "layer4", batch_x.to(args.device))
    cases = _memory_cases(args.quick, args.scorecam_layer, occlusion_options(args), batch)
    budgets = [int(b) for b in args.memory_budgets.split(",")]
    results["memory"] = peak_memory(args.arch, args.size, cases, budgets, threads)
    results["machine"]["load_average_after"] = os.getloadavg()
    results["ratios"] = ratios(results)
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


def _memory_cases(
    quick: bool, scorecam_layer: str, occlusion: dict[str, float], gradcam_batch: int
) -> list[MemoryCase]:
    """Grad-CAM at the served batch size, then each perturbation method on one image
    (its chunks, not the image count, set its peak). ``quick``: one forward-only and one
    backward perturbation method, to keep the harness check short."""
    cases = [
        MemoryCase("gradcam", batch=gradcam_batch),
        MemoryCase("occlusion", options=occlusion),
        MemoryCase("scorecam", layer=scorecam_layer),
        MemoryCase("ablationcam"),
        MemoryCase("integrated_gradients"),
        MemoryCase("smoothgrad"),
    ]
    keep = ("gradcam", "occlusion", "integrated_gradients") if quick else ()
    return [case for case in cases if not keep or case.method in keep]


if __name__ == "__main__":
    raise SystemExit(main())
