"""The GPU benchmark: camserve on one CUDA device against that device's own limits.

``python -m bench.gpu --out DIR`` (``bench/gpu_check.sh`` runs it) measures, in
one run and on one device: the model's own batched forward (float32,
``channels_last``, float16), served Grad-CAM from 64 callers on fresh images
(JPEG and tensor inputs) with the GPU's busy share sampled by ``nvidia-smi``,
pytorch-grad-cam one request at a time, Captum's ``Occlusion`` and
``IntegratedGradients`` against the served methods, the front end's no-op rate,
the cache's cold and warm latency, float16 and bfloat16 servers (rate and map
difference), the device's maps against the CPU's, and ``--processes`` 1, 2, 4.

Each section is timed and guarded: a failing section records its error and the
run goes on; ``gpu.json`` is rewritten after every section, so a run cut short
still leaves every figure taken so far. ``--cpu-smoke`` runs the same code paths
on the CPU at tiny sizes (ResNet-18 at 64 px); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camserve_server.methods import explain
from camserve_server.models import ExplainableModel
from camserve_server.models.imaging import Preprocess, decode_image
from camserve_server.runtime.precision import exact_float32_on_cuda

from . import baselines
from .frontend import frontend_rates
from .gpu_load import ClientPool, GpuSampler, LoadPlan
from .gpu_processes import supervised_server
from .gpu_profile import where_time_goes
from .gpu_report import markdown, targets
from .inputs import jpeg_images
from .latency import cache_pairs
from .run import CONFIG, MODEL, baseline_model, batch_sizes, max_diff, served_maps, start_server

PARITY_METHODS: dict[str, dict[str, float]] = {
    "gradcam": {},
    "gradcam++": {},
    "layercam": {},
    "saliency": {},
    "integrated_gradients": {"steps": 16},
    "occlusion": {"window": 32, "stride": 32},
}


@dataclass
class Scale:
    """Sizes of one run: the H200 defaults, or the CPU smoke test's tiny ones."""

    arch: str = "resnet50"
    size: int = 224
    forward_batch: int = 64
    clients: int = 4
    callers_per_client: int = 16
    duration_s: float = 4.0
    jpeg_pool: int = 8000
    tensor_pool: int = 1500
    library_requests: int = 48
    perturbation_images: int = 2
    window: int = 32
    stride: int = 16
    process_counts: tuple[int, ...] = (1, 2, 4)
    process_clients: int = 8
    frontend_s: float = 3.0

    @classmethod
    def smoke(cls) -> Scale:
        return cls(
            arch="resnet18", size=64, forward_batch=4, clients=2, callers_per_client=4,
            duration_s=1.0, jpeg_pool=60, tensor_pool=30, library_requests=3,
            perturbation_images=1, window=16, stride=16, process_counts=(1, 2),
            process_clients=2, frontend_s=0.5,
        )  # fmt: skip


@dataclass
class Run:
    """One run's settings, its results so far and where they are written."""

    args: argparse.Namespace
    scale: Scale
    out: Path
    folder: Path
    clients: ClientPool
    results: dict[str, Any] = field(default_factory=dict)
    float32_maps: list[np.ndarray] = field(default_factory=list)

    @property
    def device(self) -> str:
        device: str = self.args.device
        return device

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def section(self, name: str, body: Callable[[Run], None]) -> None:
        """Run one section, record its seconds or its error, write what there is."""
        started = time.perf_counter()
        try:
            body(self)
        except Exception as exc:  # a failed section must not lose the others
            self.results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        except BaseException:  # SIGTERM at the time limit: keep what there is, then stop
            self.results.setdefault("errors", {})[name] = "stopped at the time limit"
            raise
        finally:
            seconds = round(time.perf_counter() - started, 2)
            self.results.setdefault("sections_s", {})[name] = seconds
            self.write()

    def write(self) -> None:
        self.results["targets"] = targets(self.results)
        (self.out / "gpu.json").write_text(json.dumps(self.results, indent=2, default=float))
        (self.out / "gpu.md").write_text(markdown(self.results))

    def images(self, count: int, seed: int) -> list[bytes]:
        return jpeg_images(count, self.scale.size, seed=seed)

    def plan(self, address: str, kind: str, clients: int | None = None) -> tuple[LoadPlan, int]:
        s = self.scale
        plan = LoadPlan(
            address, MODEL, "jpeg" if kind == "jpeg" else "tensor", s.size,
            s.jpeg_pool if kind == "jpeg" else s.tensor_pool, s.callers_per_client, s.duration_s,
        )  # fmt: skip
        return plan, clients or s.clients


def _device_section(run: Run) -> None:
    info: dict[str, Any] = {
        "device": run.device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "arch": run.scale.arch,
        "input": run.scale.size,
        "smoke": run.args.cpu_smoke,
    }
    if run.cuda:
        properties = torch.cuda.get_device_properties(run.device)
        info.update(
            name=properties.name,
            memory_bytes=properties.total_memory,
            capability=f"{properties.major}.{properties.minor}",
            multiprocessors=properties.multi_processor_count,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
            tf32_convolutions=torch.backends.cudnn.allow_tf32,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            driver=_nvidia_smi("driver_version"),
        )
    run.results["device"] = info


def _nvidia_smi(query: str) -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader", "--id=0"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _forward_section(run: Run) -> None:
    s = run.scale
    model = baseline_model(s.arch, run.device)
    nhwc = baseline_model(s.arch, run.device).to(memory_format=torch.channels_last)
    figures = {
        "batch": s.forward_batch,
        "float32": baselines.forward_throughput(model, s.forward_batch, s.size, repeats=10),
        "channels_last": baselines.forward_throughput(nhwc, s.forward_batch, s.size, repeats=10),
    }
    if run.cuda:
        with torch.autocast("cuda", dtype=torch.float16):
            figures["float16"] = baselines.forward_throughput(
                nhwc, s.forward_batch, s.size, repeats=10
            )
        torch.backends.cudnn.allow_tf32 = True  # torch's own default, for comparison
        figures["channels_last_tf32"] = baselines.forward_throughput(
            nhwc, s.forward_batch, s.size, repeats=10
        )
        exact_float32_on_cuda()
    run.results["forward_ips"] = figures


def _profile_section(run: Run) -> None:
    if not run.cuda:
        run.results["time"] = {"skipped": "a CPU run has no device copies to time"}
        return
    s = run.scale
    run.results["time"] = where_time_goes(run.device, s.arch, s.size, run.out)


def _served_section(run: Run) -> None:
    """Grad-CAM load on one in-process server, then the single-caller figures on it."""
    s = run.scale
    if run.cuda:
        torch.cuda.reset_peak_memory_stats(run.device)
    server = start_server(_args(run), run.folder, max_batch_size=64)
    try:
        loads: dict[str, Any] = {}
        warm, clients = run.plan(server.address, "jpeg")
        run.clients.run(LoadPlan(**{**warm.__dict__, "duration_s": 1.0, "pool": 64}), 1, seed=99)
        for kind in ("jpeg", "tensor"):
            plan, clients = run.plan(server.address, kind)
            with GpuSampler() as sampler:
                loads[kind] = run.clients.run(plan, clients, seed=len(loads) + 1)
            loads[kind]["gpu_util"] = sampler.summary()
        loads["batch_size"] = batch_sizes(server, "gradcam")
        run.results["gradcam_rps"] = loads
        run.results["gpu_util"] = loads["jpeg"]["gpu_util"]
        run.write()
        cache_inputs = [_encoded(image) for image in run.images(8, seed=31)]
        run.results["cache"] = cache_pairs(server.address, MODEL, cache_inputs)
        frontend = frontend_rates(
            server.address, MODEL, [_encoded(image) for image in run.images(8, seed=37)],
            clients=s.clients, duration_s=s.frontend_s,
        )  # fmt: skip
        run.results["frontend_noop_rps"] = frontend["noop_rps"]
        run.results["frontend_warm_rps"] = frontend["warm_rps"]
        run.write()
        perturb = run.images(s.perturbation_images, seed=41)
        occlusion = {"window": float(s.window), "stride": float(s.stride)}
        seconds, _ = served_maps(server.address, "occlusion", perturb, occlusion)
        run.results["occlusion_vs_captum"] = {
            "camserve_s_per_image": seconds, "window": s.window, "stride": s.stride,
        }  # fmt: skip
        seconds, _ = served_maps(server.address, "integrated_gradients", perturb, {})
        run.results["ig_vs_captum"] = {"camserve_s_per_image": seconds}
        _, run.float32_maps = served_maps(server.address, "gradcam", run.images(8, seed=43), {})
    finally:
        server.stop()
    peak = torch.cuda.max_memory_allocated(run.device) if run.cuda else None
    run.results["peak_memory_bytes"] = peak


def _encoded(image: bytes) -> Any:
    from camserve.v1 import explain_pb2 as pb

    return pb.ImageInput(encoded=image)


def _library_section(run: Run) -> None:
    """pytorch-grad-cam one request at a time; Captum's occlusion and IG on the same images."""
    s = run.scale
    model = baseline_model(s.arch, run.device)
    preprocess = Preprocess(input_size=(s.size, s.size))
    baselines.forward_throughput(model, 2, s.size, repeats=1)  # warm the device's kernels
    run.results["pgc_rps"] = baselines.pytorch_grad_cam_rate(
        model, model.get_submodule("layer4"), run.images(s.library_requests, 47), preprocess
    )
    run.write()
    inputs = [preprocess(decode_image(data))[0] for data in run.images(s.perturbation_images, 41)]
    occlusion = run.results.setdefault("occlusion_vs_captum", {})
    occlusion["captum_s_per_image"] = baselines.captum_occlusion_seconds(
        model, inputs, s.window, s.stride
    )
    ig = run.results.setdefault("ig_vs_captum", {})
    ig["captum_s_per_image"] = baselines.captum_integrated_gradients_seconds(model, inputs)
    for figures in (occlusion, ig):
        if "camserve_s_per_image" in figures:
            figures["speedup"] = figures["captum_s_per_image"] / figures["camserve_s_per_image"]


def _parity_section(run: Run) -> None:
    """Largest heatmap difference between the device and the CPU, same weights and inputs,
    at the server's settings (on CUDA: exact float32, TF32 off)."""
    if not run.cuda:
        run.results["parity_max_diff"] = {"skipped": "a CPU run has nothing to compare"}
        return
    s = run.scale
    preprocess = Preprocess(input_size=(s.size, s.size))
    x = torch.stack([preprocess(decode_image(d))[0] for d in run.images(2, seed=53)])
    on = {
        name: ExplainableModel(
            baseline_model(s.arch, name), input_size=(s.size, s.size), channels_last=True
        )
        for name in ("cpu", run.device)
    }
    differences: dict[str, float] = {}
    for method, options in PARITY_METHODS.items():
        maps = {}
        for name, model in on.items():
            result = explain(model, method, x.to(model.device), top_k=1, options=options)
            maps[name] = [
                sample.heatmaps.cpu() for sample in result.samples if sample.heatmaps is not None
            ]
        differences[method] = max(
            float((a - b).abs().max()) for a, b in zip(maps["cpu"], maps[run.device], strict=True)
        )
    run.results["parity_max_diff"] = differences


def _precision_section(run: Run) -> None:
    """float16 and bfloat16 servers: Grad-CAM rate (JPEG load) and the largest difference
    of their maps from the float32 server's on the same images."""
    figures: dict[str, Any] = {}
    for precision in ("float16", "bfloat16") if run.cuda else ("bfloat16",):
        server = start_server(_args(run), run.folder, max_batch_size=64, precision=precision)
        try:
            plan, clients = run.plan(server.address, "jpeg")
            load = run.clients.run(plan, clients, seed=7 + len(figures))
            _, maps = served_maps(server.address, "gradcam", run.images(8, seed=43), {})
        finally:
            server.stop()
        figures[precision] = {
            "rps": load["rps"],
            "errors": load["errors"],
            "max_diff": max_diff(maps, run.float32_maps) if run.float32_maps else None,
        }
        run.results["precision"] = figures
        run.write()


def _processes_section(run: Run) -> None:
    """``--processes N``: the whole service (supervisor, N processes on one port) under
    fresh-image JPEG load from more client processes, float16 on CUDA."""
    s = run.scale
    config = run.folder / "processes.toml"
    config.write_text(CONFIG.format(source="arch", value=s.arch, size=s.size))
    extra = ["--max-batch-size", "64"]
    if run.cuda:
        extra += ["--precision", "float16"]
    entries: list[dict[str, Any]] = []
    run.results["processes"] = entries
    for count in s.process_counts:
        if count > 1 and not run.args.redis_url:
            entries.append({"n": count, "skipped": "no Redis for --processes > 1"})
            continue
        with supervised_server(config, count, run.device, run.args.redis_url, extra) as address:
            plan, clients = run.plan(address, "jpeg", clients=s.process_clients)
            run.clients.run(LoadPlan(**{**plan.__dict__, "duration_s": 1.0, "pool": 256}), 2, 98)
            with GpuSampler() as sampler:
                load = run.clients.run(plan, clients, seed=20 + count)
        entries.append({
            "n": count,
            "precision": "float16" if run.cuda else "float32",
            "gradcam_rps": load["rps"],
            "errors": load["errors"],
            "p50_ms": load["p50_ms"],
            "p99_ms": load["p99_ms"],
            "server_p50_ms": load["server_p50_ms"],
            "gpu_util": sampler.summary(),
        })  # fmt: skip
        run.write()


def _switch_interval_section(run: Run) -> None:
    """Served Grad-CAM (JPEG) at Python's default GIL switch interval (5 ms) and at 0.5 ms:
    whether the device worker's kernel launches wait for the GIL behind the event loop and
    the decode threads (the engine alone is ten times faster than inside the server)."""
    figures: dict[str, Any] = {}
    default = sys.getswitchinterval()
    try:
        for label, interval in (("default_5ms", default), ("0.5ms", 5e-4)):
            sys.setswitchinterval(interval)
            server = start_server(_args(run), run.folder, max_batch_size=64)
            try:
                plan, clients = run.plan(server.address, "jpeg")
                load = run.clients.run(plan, clients, seed=60 + len(figures))
            finally:
                server.stop()
            keep = ("rps", "errors", "p50_ms", "p99_ms", "server_p50_ms")
            figures[label] = {key: load[key] for key in keep}
            run.results["switch_interval"] = figures
            run.write()
    finally:
        sys.setswitchinterval(default)


def _args(run: Run) -> argparse.Namespace:
    """What ``bench.run.start_server`` reads: the architecture, input size and device."""
    return argparse.Namespace(arch=run.scale.arch, size=run.scale.size, device=run.device)


SECTIONS: tuple[tuple[str, Callable[[Run], None]], ...] = (
    ("device", _device_section),
    ("forward", _forward_section),
    ("profile", _profile_section),
    ("served", _served_section),
    ("libraries", _library_section),
    ("processes", _processes_section),
    ("precision", _precision_section),
    ("parity", _parity_section),
    ("switch_interval", _switch_interval_section),
)


def _stop_on_sigterm() -> None:
    """SIGTERM (the suite's time limit) unwinds like Ctrl-C: servers drain, pools close."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-out"), help="folder for gpu.json")
    parser.add_argument(
        "--device", default="cuda:0" if torch.cuda.is_available() else "cpu", help="cuda:0, cpu"
    )
    parser.add_argument("--redis-url", default=None, help="Redis for --processes > 1")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument(
        "--sections", default=",".join(name for name, _ in SECTIONS), help="which to run"
    )
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.device = "cpu"
    _stop_on_sigterm()
    exact_float32_on_cuda()  # what a server on CUDA sets: every float32 figure is exact
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = set(args.sections.split(","))
    scale = Scale.smoke() if args.cpu_smoke else Scale()
    with (
        tempfile.TemporaryDirectory() as folder,
        ClientPool(max(scale.clients, scale.process_clients)) as clients,
    ):
        run = Run(args, scale, args.out, Path(folder), clients)
        run.results["command"] = "python -m bench.gpu " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        for name, body in SECTIONS:
            if name in chosen:
                print(f"bench.gpu: {name}", flush=True)
                run.section(name, body)
    print((args.out / "gpu.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
