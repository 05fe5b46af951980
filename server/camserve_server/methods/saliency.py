"""Plain input-gradient attributions: saliency and input x gradient."""

from __future__ import annotations

import torch

from .base import BatchInput, Rows
from .input_gradients import AttributionMethod, input_gradients


class Saliency(AttributionMethod):
    """Saliency (Simonyan et al. 2014): ``|dy_c/dx|``."""

    id = "saliency"
    description = "Absolute gradient of the target logit with respect to the input pixels."
    reference = "Simonyan et al. 2014; Captum Saliency(abs=True)"

    def attributions(
        self, batch: BatchInput
    ) -> tuple[torch.Tensor, Rows, torch.Tensor, dict[str, torch.Tensor]]:
        logits, rows, gradients = input_gradients(batch)
        return logits, rows, gradients.abs(), {}


class InputXGradient(AttributionMethod):
    """Input x gradient (Shrikumar et al. 2016): ``x * dy_c/dx``."""

    id = "input_x_gradient"
    description = "Input times the gradient of the target logit."
    reference = "Shrikumar et al. 2016; Captum InputXGradient"

    def attributions(
        self, batch: BatchInput
    ) -> tuple[torch.Tensor, Rows, torch.Tensor, dict[str, torch.Tensor]]:
        logits, rows, gradients = input_gradients(batch)
        return logits, rows, batch.x[rows.sample] * gradients, {}
