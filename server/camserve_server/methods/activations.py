"""What a layer computed: feature maps, the channel profile, filters and embeddings."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidArgument, choices
from ..models import ExplainableModel
from ..options import Option
from .base import BatchInput, BatchResult, Family, Method, MethodNotApplicable, SampleResult
from .heatmap import minmax
from .layer_pass import forward_with_layer, layer_forward


def _activation_sample(
    logits: torch.Tensor, values: torch.Tensor, **fields: torch.Tensor
) -> SampleResult:
    empty = torch.zeros(0, dtype=torch.bool, device=values.device)
    targets = torch.zeros(0, dtype=torch.long, device=values.device)
    return SampleResult(
        targets=targets,
        heatmaps=None,
        raw=values,
        empty=empty,
        logits=logits,
        **fields,  # type: ignore[arg-type]
    )


class ActivationMethod(Method):
    """A method that reports what the model computed, with no target class."""

    family: ClassVar[Family] = "activation"
    uses_layer = True
    uses_targets = False
    needs_gradients = False


class FeatureMaps(ActivationMethod):
    """The layer's activation ``A`` per channel, optionally the top-k channels by mean."""

    id = "feature_maps"
    caches_layer = True
    description = "The layer's feature maps, each min-max scaled for display."
    reference = "Zeiler & Fergus 2014; cs231n visualising activations"
    options = (
        Option(
            "top_k",
            0,
            "keep the k channels with the highest mean (0: all)",
            minimum=0,
            maximum=1 << 16,
        ),
    )

    def run(self, batch: BatchInput) -> BatchResult:
        layer = layer_forward(batch)
        activation, logits = layer.maps, layer.logits
        k = int(batch.options["top_k"]) or activation.shape[1]
        k = min(k, activation.shape[1])
        order = activation.mean(dim=(2, 3)).topk(k, dim=1).indices
        if k == activation.shape[1]:
            order = order.sort(dim=1).values
        samples = []
        for i in range(activation.shape[0]):
            maps = activation[i, order[i]]
            result = _activation_sample(logits[i], maps, channels=order[i])
            result.heatmaps = minmax(maps)
            samples.append(result)
        return self.result(batch, samples, activations=layer.stored, logits=logits)


class ChannelProfile(ActivationMethod):
    """Mean activation per channel ``(K,)``: which filters fire for this image."""

    id = "channel_profile"
    caches_layer = True
    description = "Mean activation of every channel of the layer."
    reference = "cs231n visualising activations"

    def run(self, batch: BatchInput) -> BatchResult:
        layer = layer_forward(batch)
        profile = layer.maps.mean(dim=(2, 3))
        samples = [_activation_sample(layer.logits[i], profile[i]) for i in range(len(profile))]
        return self.result(batch, samples, activations=layer.stored, logits=layer.logits)


def conv_weights(model: ExplainableModel, layer: str | None) -> tuple[str, torch.Tensor]:
    """A convolution's weights ``(K, C, kh, kw)``; the first convolution by default."""
    convs = list(model.structure.conv_layers)
    if not convs:
        raise InvalidArgument(f"model {model.name!r} has no nn.Conv2d layer")
    name = layer or convs[0]
    module = model.submodule(name)
    if not isinstance(module, nn.Conv2d):
        raise InvalidArgument(
            f"layer {name!r} is a {type(module).__name__}, not a convolution; "
            f"convolution layers: {choices(convs)}"
        )
    return name, module.weight.detach()


class Filters(ActivationMethod):
    """The weights of a convolution; the same for every input."""

    id = "filters"
    own_default_layer = True
    description = "The weights of a convolution layer (the first one by default)."
    reference = "cs231n visualising first-layer weights"

    def run(self, batch: BatchInput) -> BatchResult:
        name, weights = conv_weights(batch.model, batch.layer)
        with torch.inference_mode():
            logits = batch.model.forward(batch.x)
        samples = [_activation_sample(logits[i], weights) for i in range(batch.x.shape[0])]
        result = self.result(batch, samples, logits=logits)
        result.layer = name
        return result


class Embedding(ActivationMethod):
    """The flattened output of a layer; by default the input of the final linear layer."""

    id = "embedding"
    own_default_layer = True
    description = "A layer's output as a vector (default: the final linear layer's input)."
    reference = "cs231n t-SNE of CNN codes"
    options = (Option("normalize", False, "L2-normalise the vector"),)

    def check_model(self, model: ExplainableModel) -> None:
        if model.graph is not None and model.graph.embedding_layer is None:
            raise MethodNotApplicable(f"model {model.name!r}: its graph has no embedding output")

    def run(self, batch: BatchInput) -> BatchResult:
        model = batch.model
        layer = batch.layer
        with torch.inference_mode():
            if layer is None and model.graph is not None:
                vectors, logits = model.graph.embed(batch.x)
                layer = model.graph.embedding_layer
            elif layer is None and model.structure.final_linear is not None:
                layer = model.structure.final_linear
                captured: list[torch.Tensor] = []
                handle = model.submodule(layer).register_forward_pre_hook(
                    lambda _m, args: captured.append(args[0].detach().float())
                )
                try:
                    logits = model.forward(batch.x)
                finally:
                    handle.remove()
                vectors = captured[-1].flatten(1)
                layer = f"{layer}:input"
            else:
                layer = layer or model.default_layer
                activation, logits = forward_with_layer(model, batch.x, layer)
                vectors = activation.flatten(1)
            if batch.options["normalize"]:
                vectors = F.normalize(vectors, dim=1)
        samples = [_activation_sample(logits[i], vectors[i]) for i in range(vectors.shape[0])]
        result = self.result(batch, samples, logits=logits)
        result.layer = layer
        return result
