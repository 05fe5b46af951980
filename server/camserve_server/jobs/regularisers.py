"""Image priors and feature statistics shared by the optimisation jobs (pixels in 0..1).

- L2: ``mean((x - 0.5)^2)``, a small-norm prior (Simonyan et al. 2014).
- Total variation: ``mean(|x[i+1, j] - x[i, j]|^b + |x[i, j+1] - x[i, j]|^b)``, ``b = 2`` by
  default, the natural-image prior of Mahendran & Vedaldi 2015.
- Blur: ``mean((x - blur(x))^2)``, a penalty on what a 3x3 Gaussian removes: the
  differentiable form of blurring every few steps (Yosinski et al. 2015).
- Gram matrix: ``G = F F^T / (h w)`` of a ``(C, h w)`` feature map (Gatys et al. 2015).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l2_penalty(pixels: torch.Tensor) -> torch.Tensor:
    """Mean squared distance from mid-grey."""
    return ((pixels - 0.5) ** 2).mean()


def total_variation(pixels: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """Mean ``|dx|^beta + |dy|^beta`` over neighbouring pixels."""
    dy = (pixels[..., 1:, :] - pixels[..., :-1, :]).abs()
    dx = (pixels[..., :, 1:] - pixels[..., :, :-1]).abs()
    return (dy**beta).mean() + (dx**beta).mean()


def gaussian_blur(pixels: torch.Tensor) -> torch.Tensor:
    """A 3x3 binomial blur per channel, reflection-padded."""
    kernel_1d = torch.tensor([1.0, 2.0, 1.0], dtype=pixels.dtype, device=pixels.device) / 4.0
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]).expand(pixels.shape[1], 1, 3, 3)
    padded = F.pad(pixels, (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernel, groups=pixels.shape[1])


def blur_penalty(pixels: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the image and its blur: high-frequency energy."""
    return ((pixels - gaussian_blur(pixels)) ** 2).mean()


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)`` features to ``(N, C, C)`` Gram matrices, divided by ``h w``."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / float(h * w)
