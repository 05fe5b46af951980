"""Integrated gradients (Sundararajan et al. 2017), Gauss-Legendre quadrature as Captum."""

from __future__ import annotations

import numpy as np
import torch

from ..options import Option
from .base import BatchInput, Rows
from .input_gradients import AttributionMethod, target_rows, weighted_input_gradients


def gauss_legendre(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``alpha`` in (0, 1) and weights summing to 1 (Captum's ``gausslegendre``)."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = torch.tensor(0.5 * (1 + nodes), dtype=torch.float32)
    return alphas, torch.tensor(0.5 * weights, dtype=torch.float32)


class IntegratedGradients(AttributionMethod):
    """``(x - x0) * integral_0^1 dy_c/dx(x0 + a(x - x0)) da``; reports the completeness gap
    ``sum(attr) - (y_c(x) - y_c(x0))`` per target as the metric ``completeness_gap``.
    """

    id = "integrated_gradients"
    heavy = True
    description = "Gradients integrated along the straight path from a baseline to the input."
    reference = "Sundararajan et al. 2017; Captum IntegratedGradients (defaults)"
    variant = "integrated_gradients (Gauss-Legendre)"
    options = (
        Option("steps", 50, "quadrature points along the path", minimum=1, maximum=1000),
        Option(
            "baseline",
            0.0,
            "baseline value x0 in the normalised input space",
            minimum=-1e3,
            maximum=1e3,
        ),
        Option(
            "batch_size",
            0,
            "path points per forward pass (0: by memory budget)",
            minimum=0,
            maximum=4096,
        ),
    )

    def attributions(
        self, batch: BatchInput
    ) -> tuple[torch.Tensor, Rows, torch.Tensor, dict[str, torch.Tensor]]:
        steps = int(batch.options["steps"])
        x = batch.x
        baseline = torch.full_like(x[:1], float(batch.options["baseline"]))
        logits, rows = target_rows(batch)
        alphas, weights = gauss_legendre(steps)
        alphas = alphas.to(x.device)

        def path_point(sample: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
            alpha = alphas[step].view(-1, 1, 1, 1)
            return baseline + alpha * (x[sample] - baseline)

        total = weighted_input_gradients(batch, rows, path_point, steps, weights)
        attribution = (x[rows.sample] - baseline) * total
        with torch.inference_mode():
            baseline_logits = batch.model.forward(baseline)[0]
        expected = rows.scores(logits) - baseline_logits[rows.target]
        gap = attribution.flatten(1).sum(dim=1) - expected
        return logits, rows, attribution, {"completeness_gap": gap}
