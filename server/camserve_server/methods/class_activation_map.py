"""CAM (Zhou et al. 2016): ``cam = sum_k W[c, k] A_k`` for models ending in GAP + linear."""

from __future__ import annotations

import torch
from torch import nn

from ..models import ExplainableModel
from .base import BatchInput, MethodNotApplicable, Rows
from .cam_base import CamMethod
from .layer_pass import LayerRead
from .precision import consistency_rtol


class ClassActivationMap(CamMethod):
    """The original class activation map, read from the final linear layer's weights.

    Applicability is checked on the model itself, not its family: the logits must
    equal ``W @ mean_hw(A) + b`` for the layer's activation ``A`` (to ``1e-3`` of the
    largest logit; to 4 eps of the autocast dtype under reduced precision). A
    transformer (its default layer gives patch tokens or a channels-last map) is
    refused: its class score is not a linear function of that layer's pooled map.
    """

    id = "cam"
    needs_gradients = False
    description = "Final linear weights applied to the last feature maps (GAP + linear models)."
    reference = "Zhou et al. 2016"

    def check_model(self, model: ExplainableModel) -> None:
        # Cheap structural test (the server lists methods by it): the final linear layer
        # must read one value per channel of the last feature map before pooling.
        # ``cam_forward_only`` still verifies the logits on the actual activations.
        linear = self._linear(model)
        last_map = model.structure.grid(model.structure.default_layer)
        if last_map is None or last_map.channels != linear.in_features:
            raise self._refusal(model, None)
        if last_map.is_token_layer:
            raise MethodNotApplicable(
                f"method 'cam' needs a model that ends in global average pooling + one linear "
                f"layer over a feature map; model {model.name!r} is a transformer (its default "
                f"layer {model.default_layer!r} gives tokens), whose class score is not a "
                "linear function of that layer's pooled map; use 'gradcam'"
            )

    def cam_forward_only(self, batch: BatchInput, layer: LayerRead, rows: Rows) -> torch.Tensor:
        activation, logits = layer.maps, layer.logits
        linear = self._linear(batch.model)
        weight = linear.weight.to(activation.dtype)
        if weight.shape[1] != activation.shape[1]:
            raise self._refusal(batch.model, batch.layer)
        pooled = activation.mean(dim=(2, 3)) @ weight.T
        if linear.bias is not None:
            pooled = pooled + linear.bias
        scale = float(logits.abs().max().clamp_min(1.0))
        if float((pooled - logits).abs().max()) > consistency_rtol(activation.device) * scale:
            raise self._refusal(batch.model, batch.layer)
        return torch.einsum("mk,mkhw->mhw", weight[rows.target], activation[rows.sample])

    def _linear(self, model: ExplainableModel) -> nn.Linear:
        name = model.structure.final_linear
        module = model.submodule(name) if name else None
        if not isinstance(module, nn.Linear):
            raise self._refusal(model, None)
        return module

    @staticmethod
    def _refusal(model: ExplainableModel, layer: str | None) -> MethodNotApplicable:
        at = f" at layer {layer!r}" if layer else ""
        return MethodNotApplicable(
            f"method 'cam' needs a model that ends in global average pooling + one linear layer"
            f"{at}; model {model.name!r} does not (its default layer is "
            f"{model.default_layer!r}); use 'gradcam', which works on any CNN"
        )
