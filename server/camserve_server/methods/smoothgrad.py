"""SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of the input."""

from __future__ import annotations

import torch

from ..options import Option
from .base import BatchInput, Rows
from .input_gradients import AttributionMethod, target_rows, weighted_input_gradients


def sample_noise(x: torch.Tensor, samples: int, level: float, seed: int) -> torch.Tensor:
    """Gaussian noise ``(N, n, 3, H, W)``, ``s = level * (max x - min x)`` per sample.

    Each sample's noise comes from its own generator seeded with ``seed`` on the
    CPU, so a result depends neither on the batch it ran in nor on the device.
    """
    noise = []
    for sample in x:
        generator = torch.Generator().manual_seed(seed)
        sigma = level * float(sample.max() - sample.min())
        draw = torch.randn((samples, *sample.shape), generator=generator) * sigma
        noise.append(draw)
    return torch.stack(noise).to(x.device)


class SmoothGrad(AttributionMethod):
    """Mean of ``dy_c/dx`` over ``n`` copies ``x + N(0, s^2)``; defined here, seedable."""

    id = "smoothgrad"
    heavy = True
    description = "The input gradient averaged over noisy copies of the image."
    reference = "Smilkov et al. 2017 (defined in camserve's method notes)"
    options = (
        Option("samples", 25, "noisy copies per image", minimum=1, maximum=1000),
        Option(
            "noise",
            0.15,
            "noise std as a fraction of the input's value range",
            minimum=0.0,
            maximum=10.0,
        ),
        Option(
            "seed",
            0,
            "random seed; the same seed gives the same result",
            minimum=0,
            maximum=2**31 - 1,
        ),
        Option(
            "batch_size",
            0,
            "noisy copies per forward pass (0: by memory budget)",
            minimum=0,
            maximum=4096,
        ),
    )

    def attributions(
        self, batch: BatchInput
    ) -> tuple[torch.Tensor, Rows, torch.Tensor, dict[str, torch.Tensor]]:
        samples = int(batch.options["samples"])
        noise = sample_noise(
            batch.x, samples, float(batch.options["noise"]), int(batch.options["seed"])
        )
        logits, rows = target_rows(batch)

        def noisy(sample: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
            return batch.x[sample] + noise[sample, step]

        weights = torch.full((samples,), 1.0 / samples)
        return logits, rows, weighted_input_gradients(batch, rows, noisy, samples, weights), {}
