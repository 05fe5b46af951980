"""``python -m bench.occlusion_incremental``: occlusion by incremental inference against
full forward passes and Captum, exact and approximate.

On one model and image (torchvision, seeded random weights, in eval), for each window
and stride: Captum's ``Occlusion`` (``perturbations_per_eval`` = camserve's chunk),
camserve's occlusion with full forward passes (``incremental`` false), with
incremental inference (Nakandala et al., SIGMOD 2019; exact) and with Krypton's
projective-field threshold at each ``--projective-field`` (``approximate``), on the
top class. The paths run in turn, ``--repeats`` rounds, so background load falls on
all of them alike; ``--clock cpu`` times the process's CPU seconds instead of elapsed
ones (with ``--threads 1``: what a busy shared machine disturbs least). Reported:
each path's fastest round, its speed-ups (the median over rounds of the ratio to
Captum's and to full passes' times in the same round), the work each incremental
plan does against full passes (estimated operations; ``work.Work``), the exact map's
largest difference from full passes' and Captum's (relative to their largest value),
and each approximate map's agreement with the exact one (``bench.map_agreement``).
Defaults: ResNet-18 and ResNet-50 at 224, windows 16/8 and 32/16,
``--projective-field 0.4 0.6``, three rounds, on CUDA when present. ``--quick``:
ResNet-18 at 64, one window, one round (the test suite uses it to check the harness
runs; its times mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torchvision
from captum.attr import Occlusion as CaptumOcclusion

from camserve_server.methods.base import BatchInput, TargetRequest
from camserve_server.methods.chunking import rows_per_pass
from camserve_server.methods.incremental.execute import estimated_work
from camserve_server.methods.occlusion import Occlusion, window_starts
from camserve_server.models import ExplainableModel

from .map_agreement import agreement, max_relative

WINDOWS = ((16, 8), (32, 16))
SHARES = (0.4, 0.6)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _speedups(rounds: dict[str, list[float]], baseline: str) -> dict[str, float]:
    """Each path's median, over rounds, of ``baseline``'s seconds over its own."""
    return {
        name: _median([b / s for b, s in zip(rounds[baseline], seconds, strict=True)])
        for name, seconds in rounds.items()
        if name != "captum"
    }


def _camserve(
    model: ExplainableModel, x: torch.Tensor, target: int, window: int, stride: int, **extra: Any
) -> tuple[torch.Tensor, str]:
    options = {
        "window": (window, window),
        "stride": (stride, stride),
        "fill": 0.0,
        "batch_size": 0,
        **extra,
    }
    batch = BatchInput(model, x, [TargetRequest((target,))], None, options, [None])
    result = Occlusion().run(batch)
    raw = result.samples[0].raw
    assert raw is not None
    return raw[0], result.variant


def _captum(
    model: ExplainableModel, x: torch.Tensor, target: int, window: int, stride: int
) -> tuple[torch.Tensor, str]:
    occlusion = CaptumOcclusion(model.module)
    with torch.no_grad():
        attribution = occlusion.attribute(
            x,
            sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride),
            baselines=0.0,
            target=target,
            perturbations_per_eval=rows_per_pass(model),
        )
    return attribution[0], "captum"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Path = Callable[[], tuple[torch.Tensor, str]]


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed_rounds(
    paths: dict[str, Path], rounds: int, device: torch.device, clock: str
) -> dict[str, Any]:
    """Every path once per round, in turn: each one's seconds, map and variant."""
    out: dict[str, Any] = {name: {"seconds": []} for name in paths}
    now = CLOCKS[clock]
    for _ in range(rounds):
        for name, run in paths.items():
            _sync(device)
            began = now()
            out[name]["map"], out[name]["variant"] = run()
            _sync(device)
            out[name]["seconds"].append(now() - began)
    return out


def measure_arch(
    arch: str,
    size: int,
    windows: list[tuple[int, int]],
    shares: list[float],
    rounds: int,
    device: str,
    clock: str = "wall",
) -> list[Any]:
    """One row per window: seconds of each path, speed-ups, work and map agreement."""
    torch.manual_seed(0)
    module = torchvision.models.get_model(arch, weights=None).eval()
    model = ExplainableModel(module, input_size=(size, size), name=arch, device=device)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.inference_mode():
        target = int(model.forward(x).argmax())
    rows = []
    for window, stride in windows:
        given = (model, x, target, window, stride)
        paths: dict[str, Path] = {
            "captum": partial(_captum, *given),
            "full": partial(_camserve, *given, incremental=False),
            "incremental": partial(_camserve, *given),
        }
        for share in shares:
            paths[f"approximate {share:g}"] = partial(
                _camserve, *given, approximate=True, projective_field=share
            )
        runs = _timed_rounds(paths, rounds, x.device, clock)
        rows.append(_row(arch, size, window, stride, runs, model, x, shares))
    return rows


def _row(
    arch: str,
    size: int,
    window: int,
    stride: int,
    runs: dict[str, Any],
    model: ExplainableModel,
    x: torch.Tensor,
    shares: list[float],
) -> dict[str, Any]:
    best = {name: min(run["seconds"]) for name, run in runs.items()}
    rounds = {name: run["seconds"] for name, run in runs.items()}
    starts = window_starts(size, window, stride)
    corners = [(top, left) for top in starts for left in starts]
    exact = runs["incremental"]["map"]
    row: dict[str, Any] = {
        "arch": arch,
        "input": size,
        "window": window,
        "stride": stride,
        "windows": len(corners),
        "seconds": best,
        "rounds": rounds,
        "variants": {name: run["variant"] for name, run in runs.items()},
        "speedup_vs_full": _speedups(rounds, "full"),
        "speedup_vs_captum": _speedups(rounds, "captum"),
        "rel_diff_vs_full": max_relative(exact, runs["full"]["map"]),
        "rel_diff_vs_captum": max_relative(exact, runs["captum"]["map"]),
        "approximate": {},
    }
    work = estimated_work(model, x, corners, (window, window))
    row["estimated_speedup"] = work.speedup if work else None
    row["positions_share"] = work.positions / work.full_positions if work else None
    for share in shares:
        name = f"approximate {share:g}"
        cut = estimated_work(model, x, corners, (window, window), share)
        row["approximate"][f"{share:g}"] = {
            **agreement(runs[name]["map"], exact),
            "estimated_speedup": cut.speedup if cut else None,
            "positions_share": cut.positions / cut.full_positions if cut else None,
        }
    return row


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
    parser.add_argument(
        "--projective-field", type=float, nargs="*", default=None, help="approximate shares"
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every path")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall: elapsed seconds; cpu: the process's CPU seconds (with --threads 1, "
        "steadier than elapsed time on a machine other work shares)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as set)")
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the harness")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.arch, args.size, args.window = args.arch or ["resnet18"], 64, args.window or ["16/8"]
        args.repeats = 1
    args.arch = args.arch or ["resnet18", "resnet50"]
    args.windows = [
        tuple(int(part) for part in text.split("/")) for text in args.window or []
    ] or list(WINDOWS)
    args.shares = list(SHARES) if args.projective_field is None else args.projective_field
    return args


def _print(row: dict[str, Any]) -> None:
    seconds, vs_captum = row["seconds"], row["speedup_vs_captum"]
    print(
        f"  {row['arch']:>9} {row['input']} window {row['window']}/{row['stride']} "
        f"({row['windows']} windows): Captum {seconds['captum']:.2f} s, "
        f"full passes {seconds['full']:.2f} s, incremental {seconds['incremental']:.2f} s "
        f"(x{row['speedup_vs_full']['incremental']:.2f} vs full, "
        f"x{vs_captum['incremental']:.2f} vs Captum; estimated x{row['estimated_speedup']:.2f}); "
        f"max rel diff {row['rel_diff_vs_full']:.1e} / {row['rel_diff_vs_captum']:.1e}"
    )
    for share, agree in row["approximate"].items():
        name = f"approximate {share}"
        print(
            f"    projective field {share}: {seconds[name]:.2f} s "
            f"(x{row['speedup_vs_full'][name]:.2f} vs full, x{vs_captum[name]:.2f} vs Captum; "
            f"estimated x{agree['estimated_speedup']:.2f}); against exact: max rel diff "
            f"{agree['max_rel_diff']:.3f}, rank correlation {agree['rank_correlation']:.3f}, "
            f"top-10% overlap {agree['top10_overlap']:.2f}, heatmap max diff "
            f"{agree['heatmap_max_diff']:.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    rows = [
        row
        for arch in args.arch
        for row in measure_arch(
            arch, args.size, args.windows, args.shares, args.repeats, args.device, args.clock
        )
    ]
    results = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "load_average": [load, os.getloadavg()],
        "rows": rows,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"Occlusion, one image, top class ({args.device}, {results['threads']} threads, "
        f"{args.clock} clock)"
    )
    for row in rows:
        _print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
