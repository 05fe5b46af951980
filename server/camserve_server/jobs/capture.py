"""One differentiable forward pass that records chosen layers' outputs.

Unlike the explanation passes, the graph is kept back to the input pixels. Downstream
modules receive a clone, so an in-place ReLU after a layer never alters the captured
tensor. When the logits are not needed the pass stops after the last captured layer.
Hooks are removed on exit, also after an exception, so a job never leaves one behind
on a model that explanation batches share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidArgument
from ..models import ExplainableModel


class _Enough(Exception):
    """Raised by the last hook when the rest of the forward pass is not needed."""


@dataclass
class Captured:
    """The logits ``(N, C)`` (None when not asked for) and each layer's output."""

    logits: torch.Tensor | None
    layers: dict[str, torch.Tensor]


def forward_capture(
    model: ExplainableModel, x: torch.Tensor, layers: Sequence[str], *, logits: bool = True
) -> Captured:
    """Run ``model`` on normalised ``x`` ``(N, 3, H, W)``, recording ``layers``' outputs."""
    wanted = list(dict.fromkeys(layers))
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, _args: tuple[object, ...], out: object) -> torch.Tensor:
            if not isinstance(out, torch.Tensor):
                raise InvalidArgument(f"layer {name!r} returns {type(out).__name__}, not a tensor")
            if name in captured:
                raise InvalidArgument(
                    f"layer {name!r} runs more than once in a forward pass; "
                    "choose the block that contains it"
                )
            captured[name] = out
            if not logits and len(captured) == len(wanted):
                raise _Enough
            return out.clone()

        return hook

    for name in wanted:
        handles.append(model.submodule(name).register_forward_hook(make_hook(name)))
    out: torch.Tensor | None = None
    try:
        out = model.module(x)
    except _Enough:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in wanted if name not in captured]
    if missing:
        raise InvalidArgument(f"layer(s) {', '.join(missing)} did not run in the forward pass")
    return Captured(logits=out if logits else None, layers=captured)


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
