"""Random, differentiable robustness transforms applied before each forward pass.

Olah et al. 2017 ("Feature Visualization", Distill): optimising through small random
jitter, scaling and rotation keeps the image from exploiting pixel-exact patterns
(high-frequency adversarial noise). One affine warp per step, drawn from the job's
generator, reflection-padded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Robustness:
    """Jitter up to ``jitter`` pixels, scale by a factor in ``1 +- scale``, rotate up to
    ``rotate`` degrees; all zero: the identity."""

    jitter: float = 0.0
    scale: float = 0.0
    rotate: float = 0.0

    @property
    def identity(self) -> bool:
        return self.jitter == 0.0 and self.scale == 0.0 and self.rotate == 0.0

    def apply(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``pixels`` ``(N, 3, H, W)`` warped by one random affine transform."""
        if self.identity:
            return pixels
        n, _, height, width = pixels.shape
        u = torch.rand((4,), generator=generator, device=pixels.device) * 2.0 - 1.0
        factor = 1.0 + self.scale * u[0]
        angle = math.radians(self.rotate) * u[1]
        shift_x = self.jitter * u[2] * 2.0 / width  # affine_grid's coordinates span 2
        shift_y = self.jitter * u[3] * 2.0 / height
        cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
        theta = torch.stack(
            [torch.stack([cos, -sin, shift_x]), torch.stack([sin, cos, shift_y])]
        ).unsqueeze(0)
        grid = F.affine_grid(theta.expand(n, 2, 3), list(pixels.shape), align_corners=False)
        return F.grid_sample(
            pixels, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
