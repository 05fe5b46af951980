"""The engine's outputs one row per (sample, target), as the reference libraries give them."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM

from camserve_server.methods import explain
from zoo import ZooModel

TOLERANCE = 1e-4  # the largest difference a map may have from its reference
TARGETS_PER_IMAGE = 3
# camserve's gradient CAMs and the pytorch-grad-cam classes they must equal.
GRADIENT_CAMS: dict[str, type[Any]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
}


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
