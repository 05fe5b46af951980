"""Modified-ReLU backward passes: guided backprop, deconvnet, and guided Grad-CAM."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..models import ExplainableModel
from .base import BatchInput, MethodNotApplicable, Rows
from .gradient_cams import GradCam
from .heatmap import attribution_heatmaps
from .input_gradients import AttributionMethod, input_gradients


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes ``grad * [input > 0] * [grad > 0]``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        out: torch.Tensor = x.clamp(min=0)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        passed: torch.Tensor = grad * (x > 0) * (grad > 0)
        return passed


class _DeconvReLU(torch.autograd.Function):
    """ReLU whose backward passes ``relu(grad)``, ignoring the forward input."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


@contextmanager
def modified_relus(
    model: ExplainableModel, function: type[torch.autograd.Function]
) -> Iterator[None]:
    """Route every ``nn.ReLU`` module through ``function`` (out of place), then restore.

    Works for in-place ReLUs and for one ReLU module called several times (as in
    torchvision's ResNet blocks), since each call goes through the function.
    """
    _require_relus(model)
    relus = [m for m in model.module.modules() if isinstance(m, nn.ReLU)]
    for relu in relus:
        relu.forward = function.apply  # type: ignore[method-assign]
    try:
        yield
    finally:
        for relu in relus:
            del relu.forward


def _require_relus(model: ExplainableModel) -> None:
    """Refuse a model without ``nn.ReLU`` modules, and a transformer (its default layer
    gives tokens): its attention softmax, GELUs and norms are no ReLUs, so the
    modified-ReLU rules do not define its backward pass."""
    if model.structure.relu_count == 0:
        raise MethodNotApplicable(
            f"model {model.name!r} has no nn.ReLU modules, which guided backprop and deconvnet "
            "modify (a transformer's MLPs use GELU); use 'saliency' or 'integrated_gradients'"
        )
    grid = model.structure.grid(model.structure.default_layer)
    if grid is not None and grid.is_token_layer:
        raise MethodNotApplicable(
            f"model {model.name!r} is a transformer (its default layer "
            f"{model.structure.default_layer!r} gives tokens): guided backprop and deconvnet "
            "modify ReLU backward passes, and its attention and GELUs are not ReLUs; use "
            "'saliency' or 'integrated_gradients'"
        )


class GuidedBackprop(AttributionMethod):
    """Guided backpropagation (Springenberg et al. 2015)."""

    id = "guided_backprop"
    description = "Input gradient where every ReLU passes only positive gradients of active units."
    reference = "Springenberg et al. 2015; Captum GuidedBackprop"

    def check_model(self, model: ExplainableModel) -> None:
        _require_relus(model)

    def attributions(
        self, batch: BatchInput
    ) -> tuple[torch.Tensor, Rows, torch.Tensor, dict[str, torch.Tensor]]:
        with modified_relus(batch.model, _GuidedReLU):
            logits, rows, gradients = input_gradients(batch)
        return logits, rows, gradients, {}


class Deconvnet(AttributionMethod):
    """Deconvnet (Zeiler & Fergus 2014): every ReLU's backward is ``relu(grad)``."""

    id = "deconvnet"
    description = "Input gradient where every ReLU passes only positive gradients."
    reference = "Zeiler & Fergus 2014; Captum Deconvolution"

    def check_model(self, model: ExplainableModel) -> None:
        _require_relus(model)

    def attributions(
        self, batch: BatchInput
    ) -> tuple[torch.Tensor, Rows, torch.Tensor, dict[str, torch.Tensor]]:
        with modified_relus(batch.model, _DeconvReLU):
            logits, rows, gradients = input_gradients(batch)
        return logits, rows, gradients, {}


class GuidedGradCam(AttributionMethod):
    """Guided Grad-CAM (Selvaraju et al. 2017): ``guided_backprop * heatmap(gradcam)``."""

    id = "guided_gradcam"
    uses_layer = True
    description = "Guided backprop masked by the Grad-CAM heatmap at a layer."
    reference = "Selvaraju et al. 2017 (defined in camserve's method notes)"

    def check_model(self, model: ExplainableModel) -> None:
        _require_relus(model)

    def attributions(
        self, batch: BatchInput
    ) -> tuple[torch.Tensor, Rows, torch.Tensor, dict[str, torch.Tensor]]:
        cams = GradCam().run(batch)
        explicit = [
            type(t)(classes=tuple(int(c) for c in s.targets.tolist()))
            for t, s in zip(batch.targets, cams.samples, strict=True)
        ]
        guided_batch = BatchInput(
            batch.model, batch.x, explicit, batch.layer, batch.options, batch.cached
        )
        logits, rows, guided, _ = GuidedBackprop().attributions(guided_batch)
        heat = torch.cat([s.heatmaps for s in cams.samples if s.heatmaps is not None])
        return logits, rows, guided * heat[:, None], {}

    def heatmaps(self, attribution: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return attribution_heatmaps(attribution)
