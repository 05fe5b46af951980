"""``python -m bench.occlusion_incremental``: occlusion by incremental inference against
full forward passes and Captum.

On one model and image (torchvision, seeded random weights, in eval), for each window
and stride: Captum's ``Occlusion`` (``perturbations_per_eval`` = camserve's chunk), camserve's
occlusion with full forward passes (``incremental`` false) and with incremental
inference (Nakandala et al., SIGMOD 2019), each timed once on the top class. Reported:
seconds of each, the incremental path's speed-up over both, and the largest difference
of its map from theirs, relative to their largest value. Defaults: ResNet-18 and ResNet-50
at 224, windows 16/8 and 32/16, on CUDA when present. ``--quick`` runs ResNet-18 at 64
with one window (the test suite uses it to check the harness runs; its times mean nothing).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
import torchvision
from captum.attr import Occlusion as CaptumOcclusion

from camserve_server.methods.base import BatchInput, TargetRequest
from camserve_server.methods.chunking import rows_per_pass
from camserve_server.methods.occlusion import INCREMENTAL_VARIANT, Occlusion
from camserve_server.models import ExplainableModel

WINDOWS = ((16, 8), (32, 16))


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def _camserve(
    model: ExplainableModel, x: torch.Tensor, target: int, window: int, stride: int, fast: bool
) -> tuple[float, torch.Tensor, str]:
    options = {
        "window": (window, window),
        "stride": (stride, stride),
        "fill": 0.0,
        "batch_size": 0,
        "incremental": fast,
    }
    batch = BatchInput(model, x, [TargetRequest((target,))], None, options, [None])
    _sync(x.device)
    began = time.perf_counter()
    result = Occlusion().run(batch)
    _sync(x.device)
    raw = result.samples[0].raw
    assert raw is not None
    return time.perf_counter() - began, raw[0], result.variant


def _captum(
    model: ExplainableModel, x: torch.Tensor, target: int, window: int, stride: int
) -> tuple[float, torch.Tensor]:
    occlusion = CaptumOcclusion(model.module)
    _sync(x.device)
    began = time.perf_counter()
    with torch.no_grad():
        attribution = occlusion.attribute(
            x,
            sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride),
            baselines=0.0,
            target=target,
            perturbations_per_eval=rows_per_pass(model),
        )
    _sync(x.device)
    return time.perf_counter() - began, attribution[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_arch(arch: str, size: int, windows: list[tuple[int, int]], device: str) -> list[Any]:
    """One row per window: seconds of each path, speed-ups, and the maps' differences."""
    torch.manual_seed(0)
    module = torchvision.models.get_model(arch, weights=None).eval()
    model = ExplainableModel(module, input_size=(size, size), name=arch, device=device)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.inference_mode():
        target = int(model.forward(x).argmax())
    rows = []
    for window, stride in windows:
        captum_s, captum_map = _captum(model, x, target, window, stride)
        full_s, full_map, full_variant = _camserve(model, x, target, window, stride, False)
        fast_s, fast_map, fast_variant = _camserve(model, x, target, window, stride, True)
        rows.append(
            {
                "arch": arch,
                "input": size,
                "window": window,
                "stride": stride,
                "captum_s": captum_s,
                "full_s": full_s,
                "incremental_s": fast_s,
                "speedup_vs_full": full_s / fast_s,
                "speedup_vs_captum": captum_s / fast_s,
                "incremental_ran": fast_variant == INCREMENTAL_VARIANT,
                "full_variant": full_variant,
                "rel_diff_vs_full": _relative(fast_map, full_map),
                "rel_diff_vs_captum": _relative(fast_map, captum_map),
            }
        )
    return rows


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--device", default="cuda:0" if torch.cuda.is_available() else "cpu", help="cpu, cuda:0"
    )
    parser.add_argument("--arch", action="append", help="torchvision architectures (repeatable)")
    parser.add_argument("--size", type=int, default=224, help="input side in pixels")
    parser.add_argument(
        "--window", action="append", help="WINDOW/STRIDE in pixels, e.g. 32/16 (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the harness")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.arch, args.size, args.window = args.arch or ["resnet18"], 64, args.window or ["16/8"]
    args.arch = args.arch or ["resnet18", "resnet50"]
    args.windows = [
        tuple(int(part) for part in text.split("/")) for text in args.window or []
    ] or list(WINDOWS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    rows = [
        row
        for arch in args.arch
        for row in measure_arch(arch, args.size, args.windows, args.device)
    ]
    results = {"device": args.device, "rows": rows}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"Occlusion, one image, top class ({args.device})")
    for row in rows:
        print(
            f"  {row['arch']:>9} {row['input']} window {row['window']}/{row['stride']}: "
            f"Captum {row['captum_s']:.2f} s, full passes {row['full_s']:.2f} s, "
            f"incremental {row['incremental_s']:.2f} s "
            f"(x{row['speedup_vs_full']:.2f} vs full, x{row['speedup_vs_captum']:.2f} vs Captum); "
            f"max rel diff {row['rel_diff_vs_full']:.1e} / {row['rel_diff_vs_captum']:.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
