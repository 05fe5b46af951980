"""Which layer a job reads: the model's default, checked to give what the job needs."""

from __future__ import annotations

from ..errors import InvalidArgument
from ..models import ExplainableModel


def spatial_layer(model: ExplainableModel, layer: str | None, what: str) -> str:
    """``layer`` (or the model's default layer) checked to output a ``(C, h, w)`` map."""
    name = model.resolve_layer(layer)
    info = model.structure.layers[name]
    if len(info.shape) != 4:
        raise InvalidArgument(
            f"{what} needs a layer with a spatial (C, h, w) output; {name!r} outputs "
            f"{info.shape[1:]}; valid layers: {', '.join(model.structure.spatial_layers())}"
        )
    return name


def layer_channels(model: ExplainableModel, layer: str) -> int:
    """The number of channels ``layer`` outputs."""
    return int(model.structure.layers[layer].shape[1])
