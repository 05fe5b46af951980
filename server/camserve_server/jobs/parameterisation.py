"""How an optimised image is parameterised: plain pixels, or a decorrelated Fourier basis.

Both produce an image in 0..1 pixels ``(1, 3, H, W)`` from their parameters.
``PixelImage`` holds the pixels themselves and is clamped into 0..1 after every step.
``FourierImage`` follows Olah et al. 2017, "Feature Visualization" (Distill): the
parameters are a 2-D real FFT spectrum scaled by ``1 / f`` (so every frequency learns
at a similar rate), whitened colours decorrelated with the square root of ImageNet's
colour covariance, then a sigmoid into 0..1.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

# The square root of ImageNet's RGB covariance (from its SVD), as in Lucid.
_COLOR_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
_COLOR_NORM = float(_COLOR_SQRT.norm(dim=0).max())


class ImageParameterisation(Protocol):
    """Parameters to optimise and the image they define, in 0..1 pixels."""

    def parameters(self) -> list[torch.Tensor]: ...

    def pixels(self) -> torch.Tensor: ...

    def after_step(self) -> None: ...


class PixelImage:
    """The pixels themselves ``(1, 3, H, W)``, kept in 0..1 by clamping after each step."""

    def __init__(self, start: torch.Tensor) -> None:
        self.value = start.detach().clone().clamp_(0.0, 1.0).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.value]

    def pixels(self) -> torch.Tensor:
        return self.value

    def after_step(self) -> None:
        with torch.no_grad():
            self.value.clamp_(0.0, 1.0)


class FourierImage:
    """An image ``sigmoid(C @ irfft2(s * w / f))`` with ``f`` the spatial frequency, ``C`` the
    colour correlation square root: steps on ``w`` change all pixels coherently."""

    def __init__(self, start: torch.Tensor, *, decay_power: float = 1.0) -> None:
        """Parameters whose image is ``start`` ``(1, 3, H, W)`` (clamped into (0, 1)), so both
        parameterisations begin at the same seeded noise."""
        height, width = int(start.shape[-2]), int(start.shape[-1])
        device = start.device
        fy = torch.fft.fftfreq(height, device=device)[:, None]
        fx = torch.fft.rfftfreq(width, device=device)[None, :]
        frequency = torch.sqrt(fx * fx + fy * fy).clamp(min=1.0 / max(height, width))
        self.scale = (1.0 / frequency**decay_power) * math.sqrt(height * width)
        self.size = (height, width)
        self.color = (_COLOR_SQRT / _COLOR_NORM).to(device)
        with torch.no_grad():
            rgb = torch.logit(start.detach().float().clamp(1e-3, 1.0 - 1e-3))
            decorrelated = torch.einsum("ij,njhw->nihw", torch.linalg.inv(self.color), rgb)
            spectrum = torch.fft.rfft2(decorrelated * 4.0) / self.scale
        self.spectrum = torch.view_as_real(spectrum).contiguous().requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.spectrum]

    def pixels(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        decorrelated = torch.fft.irfft2(spectrum, s=self.size) / 4.0
        rgb = torch.einsum("ij,njhw->nihw", self.color, decorrelated)
        return torch.sigmoid(rgb)

    def after_step(self) -> None:
        return None


def noise_pixels(
    size: tuple[int, int], generator: torch.Generator, device: torch.device, std: float
) -> torch.Tensor:
    """Grey 0.5 plus Gaussian noise of ``std``, clamped into 0..1: ``(1, 3, H, W)``."""
    noise = torch.randn((1, 3, *size), generator=generator, device=device) * std
    return (0.5 + noise).clamp_(0.0, 1.0)


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``: jobs never touch the global RNG."""
    return torch.Generator(device=device).manual_seed(int(seed))
