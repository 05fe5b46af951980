"""Job images for people: the normalised tensor mapped back to 8-bit RGB pixels.

``rgb = round(255 * clip(x * std + mean, 0, 1))`` per channel, laid out ``(H, W, 3)``;
previews are also scaled down (antialiased bilinear) so their longer side is at
most ``PREVIEW_SIDE`` pixels.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from .base import Normalisation

PREVIEW_SIDE = 128

ByteArray = npt.NDArray[np.uint8]


def to_rgb(x: torch.Tensor, normalisation: Normalisation, max_side: int | None = None) -> ByteArray:
    """A normalised ``(3, H, W)`` tensor as displayable uint8 RGB ``(H, W, 3)``."""
    pixels = normalisation.to_pixels(x.detach().float().cpu()).clamp(0.0, 1.0)
    height, width = int(pixels.shape[-2]), int(pixels.shape[-1])
    if max_side is not None and max(height, width) > max_side:
        scale = max_side / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        pixels = F.interpolate(
            pixels[None], size=size, mode="bilinear", align_corners=False, antialias=True
        )[0].clamp(0.0, 1.0)
    array = (pixels * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return np.asarray(array.numpy(), dtype=np.uint8)


def preview_rgb(x: torch.Tensor, normalisation: Normalisation) -> ByteArray:
    """A small displayable preview of a job's current image."""
    return to_rgb(x, normalisation, PREVIEW_SIDE)
