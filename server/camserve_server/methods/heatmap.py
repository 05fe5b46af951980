"""The heatmap pipeline shared by every method (METHODS.md, "Heatmap pipeline").

CAM family: ``minmax(resize_bilinear(minmax(relu(cam)), (H, W)))`` per map, with
half-pixel centres (``align_corners=False``, OpenCV's ``INTER_LINEAR``).
Gradient attributions: ``minmax(max_c |attr|)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-7


def minmax(values: torch.Tensor) -> torch.Tensor:
    """Scale each row (first dimension) to [0, 1]: ``(v - min v) / (max(v - min v) + 1e-7)``."""
    flat = values.flatten(1)
    shifted = flat - flat.amin(dim=1, keepdim=True)
    scaled = shifted / (shifted.amax(dim=1, keepdim=True) + EPS)
    return scaled.view_as(values)


def is_empty(values: torch.Tensor) -> torch.Tensor:
    """True for rows with no positive value: a legitimately empty map."""
    return values.flatten(1).amax(dim=1) <= 0


def cam_heatmaps(cam: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn CAMs ``(M, h, w)`` into heatmaps ``(M, H, W)`` in [0, 1] and ``empty`` flags."""
    positive = torch.relu(cam.float())
    empty = is_empty(positive)
    upsampled = F.interpolate(
        minmax(positive)[:, None], size=size, mode="bilinear", align_corners=False
    )[:, 0]
    heat = minmax(upsampled)
    return heat.masked_fill(empty[:, None, None], 0.0), empty


def attribution_heatmaps(attribution: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduce attributions ``(M, 3, H, W)`` to heatmaps: max over channels of ``|a|``, minmax."""
    magnitude = attribution.float().abs().amax(dim=1)
    empty = is_empty(magnitude)
    return minmax(magnitude).masked_fill(empty[:, None, None], 0.0), empty


def signed_heatmaps(attribution: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps of the evidence *for* a class: minmax of ``relu(mean_c a)`` (occlusion)."""
    positive = torch.relu(attribution.float().mean(dim=1))
    empty = is_empty(positive)
    return minmax(positive).masked_fill(empty[:, None, None], 0.0), empty
