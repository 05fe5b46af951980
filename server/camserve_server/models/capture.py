"""One forward pass that records chosen layers' outputs (or, with ``:input``, a module's input).

Used by the optimisation jobs (differentiable: the graph is kept back to the
input pixels) and by image-set indexing (under ``torch.inference_mode``).
Downstream modules receive a clone, so an in-place operation after a layer (an
in-place ReLU) never alters the captured tensor. A transformer's layer is recorded
as its map grid ``(N, C, h, w)`` (``LayerGrid.maps``: prefix tokens dropped, Swin's
channels-last maps permuted), so every reader sees channels first. When the logits are not needed
the pass stops after the last captured layer. Hooks are removed on exit, also
after an exception, so no hook is left on a model that explanation batches share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import InvalidArgument
from .explainable import ExplainableModel

INPUT_SUFFIX = ":input"  # "classifier:input": the input of module "classifier"
_Recorder = Callable[[str, object], torch.Tensor]


class _Enough(Exception):
    """Raised by the last hook when the rest of the forward pass is not needed."""


@dataclass
class Captured:
    """The logits ``(N, C)`` (None when not asked for) and each capture's tensor."""

    logits: torch.Tensor | None
    layers: dict[str, torch.Tensor]


def forward_capture(
    model: ExplainableModel, x: torch.Tensor, layers: Sequence[str], *, logits: bool = True
) -> Captured:
    """Run ``model`` on normalised ``x`` ``(N, 3, H, W)``, recording each of ``layers``: a
    module's output (a transformer layer's as its map grid), or with the ``:input`` suffix
    its (first) input."""
    wanted = list(dict.fromkeys(layers))
    captured: dict[str, torch.Tensor] = {}
    input_size = (int(x.shape[-2]), int(x.shape[-1]))
    grids = {
        name: grid
        for name in wanted
        if not name.endswith(INPUT_SUFFIX)
        and (grid := model.structure.grid(name)) is not None
        and grid.is_token_layer
    }

    def record(name: str, value: object) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise InvalidArgument(f"layer {name!r} is {type(value).__name__}, not a tensor")
        if name in captured:
            raise InvalidArgument(
                f"layer {name!r} runs more than once in a forward pass; "
                "choose the block that contains it"
            )
        grid = grids.get(name)
        captured[name] = value if grid is None else grid.maps(value, input_size)
        if not logits and len(captured) == len(wanted):
            raise _Enough
        return value.clone()

    handles = [_hook(model, name, record) for name in wanted]
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


def _hook(model: ExplainableModel, name: str, record: _Recorder) -> RemovableHandle:
    if name.endswith(INPUT_SUFFIX):
        module = model.submodule(name.removesuffix(INPUT_SUFFIX))

        def pre_hook(_m: nn.Module, args: tuple[object, ...]) -> tuple[object, ...]:
            if not args:
                raise InvalidArgument(f"module {name!r} is called without an input")
            return (record(name, args[0]), *args[1:])

        return module.register_forward_pre_hook(pre_hook)

    def hook(_m: nn.Module, _args: tuple[object, ...], out: object) -> torch.Tensor:
        return record(name, out)

    return model.submodule(name).register_forward_hook(hook)
