"""``make bench``: camserve against the model's own speed and the libraries people use today.

Every figure is a ratio against a baseline measured in this same run, on this
device and model. ``--quick`` runs tiny settings (the test suite uses it to check
the harness works; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import torch
import torchvision

from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc
from camserve_server.config import Settings, load_config_file
from camserve_server.inprocess import ServerThread
from camserve_server.models.imaging import Preprocess, decode_image

from . import baselines
from .inputs import jpeg_images
from .loadgen import build_request, run_load

CONFIG = """
[[models]]
name = "bench"
arch = "{arch}"
input_size = [{size}, {size}]
"""


def _server(arch: str, size: int, folder: Path, **overrides: Any) -> ServerThread:
    config = folder / "bench.toml"
    config.write_text(CONFIG.format(arch=arch, size=size))
    _, models = load_config_file(config)
    settings = replace(Settings(port=0, metrics_port=-1), models=models, **overrides)
    thread = ServerThread(settings)
    thread.start()
    return thread


def _batch_sizes(thread: ServerThread, method: str) -> dict[str, float]:
    assert thread.runtime is not None
    registry = thread.runtime.metrics.registry
    labels = {"model": "bench", "method": method}
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


def _baseline_model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)  # the same weights the server builds
    model: torch.nn.Module = torchvision.models.get_model(arch, weights=None)
    return model.eval()


def _cache_pairs(address: str, images: list[bytes]) -> dict[str, float]:
    """Cold: a fresh image; warm: the same image, another target and another CAM method."""
    channel = grpc.insecure_channel(address)
    stub = explain_pb2_grpc.ExplainServiceStub(channel)
    cold, warm = [], []
    for image in images:
        started = time.perf_counter()
        first = stub.Explain(build_request("bench", "gradcam", image))
        cold.append(time.perf_counter() - started)
        assert not first.cache_hit
        second = build_request("bench", "gradcam++", image)
        second.targets.CopyFrom(pb.Targets(classes=[first.top_classes[1].index]))
        started = time.perf_counter()
        reply = stub.Explain(second)
        warm.append(time.perf_counter() - started)
        assert reply.cache_hit
    channel.close()
    cold_ms, warm_ms = statistics.median(cold) * 1e3, statistics.median(warm) * 1e3
    return {"cold_p50_ms": cold_ms, "warm_p50_ms": warm_ms, "speedup": cold_ms / warm_ms}


def _overhead(address: str, images: list[bytes]) -> dict[str, float]:
    """Latency minus compute at concurrency 1 (decode, queue, serialisation, transport)."""
    channel = grpc.insecure_channel(address)
    stub = explain_pb2_grpc.ExplainServiceStub(channel)
    overheads, decode = [], []
    for image in images:
        started = time.perf_counter()
        reply = stub.Explain(build_request("bench", "gradcam", image))
        latency_ms = (time.perf_counter() - started) * 1e3
        overheads.append(latency_ms - reply.timings.compute_ms)
        decode.append(reply.timings.decode_ms)
    channel.close()
    return {
        "overhead_p50_ms": statistics.median(overheads),
        "decode_p50_ms": statistics.median(decode),
    }


def _served_seconds(
    address: str, method: str, images: list[bytes], options: dict[str, float]
) -> float:
    channel = grpc.insecure_channel(address)
    stub = explain_pb2_grpc.ExplainServiceStub(channel)
    started = time.perf_counter()
    for image in images:
        stub.Explain(build_request("bench", method, image, options), timeout=1800)
    channel.close()
    return (time.perf_counter() - started) / len(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--library-requests", type=int, default=12)
    parser.add_argument("--perturbation-images", type=int, default=2)
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings: checks the harness runs"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.arch, args.size, args.requests, args.concurrency = "resnet18", 64, 12, 4
        args.library_requests, args.perturbation_images = 3, 1
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": "cpu",
        },
        "model": {"arch": args.arch, "input": args.size},
    }
    images = jpeg_images(args.requests * 2 + 64, args.size, seed=1)
    window, stride = (32, 16) if not args.quick else (16, 16)
    occlusion_options = {"window": float(window), "stride": float(stride)}
    with tempfile.TemporaryDirectory() as folder:
        batched = _server(args.arch, args.size, Path(folder))
        try:
            asyncio.run(run_load(batched.address, "bench", ["gradcam"], images[:8],
                                 concurrency=4, requests=8))  # fmt: skip
            load = asyncio.run(
                run_load(
                    batched.address,
                    "bench",
                    ["gradcam"],
                    images[8:],
                    concurrency=args.concurrency,
                    requests=args.requests,
                )
            )
            results["gradcam"] = {**load.summary(), "batch_size": _batch_sizes(batched, "gradcam")}
            fresh = images[8 + args.requests :]
            results["cache"] = _cache_pairs(batched.address, fresh[:8])
            results["overhead"] = _overhead(batched.address, fresh[8:24])
            perturb = fresh[24 : 24 + args.perturbation_images]
            results["occlusion"] = {
                "camserve_s_per_image": _served_seconds(
                    batched.address, "occlusion", perturb, occlusion_options
                )
            }
            results["integrated_gradients"] = {
                "camserve_s_per_image": _served_seconds(
                    batched.address, "integrated_gradients", perturb, {}
                )
            }
        finally:
            batched.stop()
        single = _server(args.arch, args.size, Path(folder), max_batch_size=1)
        try:
            load = asyncio.run(
                run_load(
                    single.address,
                    "bench",
                    ["gradcam"],
                    images[8:],
                    concurrency=args.concurrency,
                    requests=args.requests,
                )
            )
            results["gradcam_unbatched"] = load.summary()
        finally:
            single.stop()

    model = _baseline_model(args.arch)
    mean_batch = max(1, round(results["gradcam"]["batch_size"]["mean"]))
    results["model"]["forward_ips"] = baselines.forward_throughput(model, mean_batch, args.size)
    nhwc = _baseline_model(args.arch).to(memory_format=torch.channels_last)
    results["model"]["forward_channels_last_ips"] = baselines.forward_throughput(
        nhwc, mean_batch, args.size
    )
    results["model"]["forward_backward_ips"] = baselines.forward_backward_throughput(
        model, mean_batch, args.size
    )
    results["model"]["batch"] = mean_batch
    preprocess = Preprocess(input_size=(args.size, args.size))
    layer = model.get_submodule("layer4")
    results["pytorch_grad_cam_rps"] = baselines.pytorch_grad_cam_rate(
        model, layer, images[: args.library_requests], preprocess
    )
    inputs = [preprocess(decode_image(data))[0] for data in perturb]
    results["occlusion"]["captum_s_per_image"] = baselines.captum_occlusion_seconds(
        model, inputs, window, stride
    )
    results["integrated_gradients"]["captum_s_per_image"] = (
        baselines.captum_integrated_gradients_seconds(model, inputs)
    )
    results["ratios"] = _ratios(results)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(_table(results))
    return 0


def _ratios(r: dict[str, Any]) -> dict[str, float]:
    served = r["gradcam"]["throughput_rps"]
    return {
        "gradcam_vs_forward": served / r["model"]["forward_ips"],
        "gradcam_vs_forward_channels_last": served / r["model"]["forward_channels_last_ips"],
        "gradcam_vs_pytorch_grad_cam": served / r["pytorch_grad_cam_rps"],
        "gradcam_vs_unbatched": served / r["gradcam_unbatched"]["throughput_rps"],
        "cache_warm_speedup": r["cache"]["speedup"],
        "occlusion_vs_captum": r["occlusion"]["captum_s_per_image"]
        / r["occlusion"]["camserve_s_per_image"],
        "integrated_gradients_vs_captum": r["integrated_gradients"]["captum_s_per_image"]
        / r["integrated_gradients"]["camserve_s_per_image"],
    }


def _table(r: dict[str, Any]) -> str:
    g, u, c, o = r["gradcam"], r["gradcam_unbatched"], r["cache"], r["overhead"]
    rows = [
        ("model", f"{r['model']['arch']} at {r['model']['input']}, "
                  f"{r['machine']['threads']} threads"),
        (f"model forward (batch {r['model']['batch']})", f"{r['model']['forward_ips']:.1f} img/s"),
        ("model forward, channels_last", f"{r['model']['forward_channels_last_ips']:.1f} img/s"),
        ("model forward+input backward", f"{r['model']['forward_backward_ips']:.1f} img/s"),
        ("camserve gradcam served", f"{g['throughput_rps']:.1f} req/s  p50 {g['p50_ms']:.0f} ms  "
                                    f"p95 {g['p95_ms']:.0f} ms  p99 {g['p99_ms']:.0f} ms"),
        ("  batch size mean", f"{g['batch_size']['mean']:.1f}"),
        ("camserve gradcam, max_batch_size=1", f"{u['throughput_rps']:.1f} req/s"),
        ("pytorch-grad-cam, one at a time", f"{r['pytorch_grad_cam_rps']:.1f} req/s"),
        ("cache: cold / warm p50", f"{c['cold_p50_ms']:.1f} ms / {c['warm_p50_ms']:.2f} ms"),
        ("service overhead p50 (concurrency 1)", f"{o['overhead_p50_ms']:.2f} ms "
                                                 f"(decode {o['decode_p50_ms']:.2f} ms)"),
        ("occlusion camserve / captum", f"{r['occlusion']['camserve_s_per_image']:.2f} s / "
                                        f"{r['occlusion']['captum_s_per_image']:.2f} s per image"),
        ("integrated gradients camserve / captum",
         f"{r['integrated_gradients']['camserve_s_per_image']:.2f} s / "
         f"{r['integrated_gradients']['captum_s_per_image']:.2f} s per image"),
    ]  # fmt: skip
    rows += [(f"ratio {name}", f"{value:.2f}x") for name, value in r["ratios"].items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


if __name__ == "__main__":
    raise SystemExit(main())
