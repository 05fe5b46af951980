"""``python -m bench.occlusion_approximate_demo``: how close approximate occlusion's maps
stay to the exact ones on a trained model: the demo classifier on its six samples.

Krypton's projective-field threshold (Nakandala et al., SIGMOD 2019, section 4.1) cuts
each window's changed region at ``ceil(share * side)`` of every layer; on a trained
model a window's effect fades towards the edge of its cone, which the cut drops. For
each ``--projective-field`` share: the estimated speed-up of its plan over full
passes (``work.Work``; the exact plan's first) and, over the samples, the smallest and
largest of each ``bench.map_agreement`` measure against the exact map. No timing.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch
from PIL import Image

from camserve_server.demo import INPUT_SIZE, SAMPLES_DIR, load_demo_model, preprocess
from camserve_server.methods.base import BatchInput, BatchResult, TargetRequest
from camserve_server.methods.incremental.execute import estimated_work
from camserve_server.methods.occlusion import Occlusion, window_starts
from camserve_server.models import ExplainableModel

from .map_agreement import agreement


def _run(
    model: ExplainableModel, x: torch.Tensor, window: int, stride: int, **extra: Any
) -> BatchResult:
    options = {"window": (window, window), "stride": (stride, stride), "fill": 0.0}
    options.update(batch_size=0, incremental=True, **extra)
    count = x.shape[0]
    batch = BatchInput(model, x, [TargetRequest(top_k=1)] * count, None, options, [None] * count)
    return Occlusion().run(batch)


def _maps(result: BatchResult) -> list[torch.Tensor]:
    return [sample.raw[0, 0] for sample in result.samples if sample.raw is not None]


def measure(window: int, stride: int, shares: list[float]) -> dict[str, Any]:
    model = ExplainableModel(load_demo_model(), input_size=INPUT_SIZE, name="demo")
    paths = sorted(SAMPLES_DIR.glob("*.png"))
    x = torch.stack([preprocess(np.array(Image.open(p).convert("RGB"))) for p in paths])
    starts = window_starts(INPUT_SIZE[0], window, stride)
    corners = [(top, left) for top in starts for left in starts]
    exact = _maps(_run(model, x, window, stride))
    work = estimated_work(model, x[:1], corners, (window, window))
    rows: dict[str, Any] = {"exact": {"estimated_speedup": work.speedup if work else None}}
    for share in shares:
        result = _run(model, x, window, stride, approximate=True, projective_field=share)
        measures = [agreement(a, e) for a, e in zip(_maps(result), exact, strict=True)]
        cut = estimated_work(model, x[:1], corners, (window, window), share)
        rows[f"{share:g}"] = {
            "variant": result.variant,
            "estimated_speedup": cut.speedup if cut else None,
            **{
                name: [min(m[name] for m in measures), max(m[name] for m in measures)]
                for name in measures[0]
            },
        }
    return {"window": window, "stride": stride, "samples": len(paths), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--projective-field", type=float, nargs="*", default=[0.4, 0.5, 0.6])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = measure(args.window, args.stride, args.projective_field)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"Demo model, {results['samples']} samples, window {args.window}/{args.stride}")
    for name, row in results["rows"].items():
        ranges = ", ".join(
            f"{key} {low:.3f}-{high:.3f}"
            for key, value in row.items()
            if isinstance(value, list)
            for low, high in [value]
        )
        print(
            f"  {name}: estimated x{row['estimated_speedup']:.2f}"
            + (f"; {ranges}" if ranges else "")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
