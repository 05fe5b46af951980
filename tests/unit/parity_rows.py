"""The engine's outputs one row per (sample, target), as the reference libraries give them."""

from __future__ import annotations

from typing import Literal

import torch

from camserve_server.methods import explain
from zoo import ZooModel


def engine_rows(
    zoo: ZooModel,
    method: str,
    x: torch.Tensor,
    targets: list[list[int]],
    output: Literal["heatmaps", "raw"],
    *,
    layer: str | None = None,
    options: dict[str, object] | None = None,
) -> torch.Tensor:
    """The engine's ``output`` for every (sample, target) row, in row order: heatmaps
    ``(M, H, W)`` or raw attributions ``(M, 3, H, W)``; each sample explains its targets."""
    result = explain(zoo.model, method, x, targets=targets, layer=layer, options=options)
    rows = []
    for sample, classes in zip(result.samples, targets, strict=True):
        assert sample.targets.tolist() == classes
        row = sample.heatmaps if output == "heatmaps" else sample.raw
        assert row is not None
        rows.append(row)
    return torch.cat(rows)
