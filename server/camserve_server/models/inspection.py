"""Learn a model's structure by running it once: layer output shapes, which layers
give map grids, the default CAM layer, the final linear layer and the number of
classes.

Nothing here is per architecture: a dummy forward with a hook on every module
records what each module returns and in which order, which is enough to find
"the last module with a spatial output before global pooling" for any CNN, and
"the last attention block's first norm" for any vision transformer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .attention_default import attention_block_norm
from .grid_detection import is_patchify, layer_grids, patch_grid, prefix_tokens
from .layer_grid import LayerGrid

_ADAPTIVE_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class LayerInfo:
    """What one module returned during the probe forward."""

    name: str
    kind: str
    shape: tuple[int, ...]
    order: int


@dataclass(frozen=True)
class ModelStructure:
    """The facts camserve needs about a classifier, read off one forward pass."""

    num_classes: int
    layers: dict[str, LayerInfo]
    default_layer: str
    final_linear: str | None
    embedding_dim: int
    conv_layers: tuple[str, ...] = field(default=())
    relu_count: int = 0
    activation_bytes: int = 0
    grids: dict[str, LayerGrid] = field(default_factory=dict)

    def grid(self, layer: str) -> LayerGrid | None:
        """How ``layer``'s output becomes maps ``(N, C, h, w)``; None if it gives none.

        A structure made without grids (a forward-only graph's) reads every 4-D
        output as channels first.
        """
        if self.grids:
            return self.grids.get(layer)
        info = self.layers.get(layer)
        if info is None or len(info.shape) != 4:
            return None
        _, channels, height, width = info.shape
        return LayerGrid("channels_first", channels, height, width, (0, 0))

    def spatial_layers(self) -> list[str]:
        """Layers that give maps (feature maps, patch tokens, channels-last maps), in
        execution order."""
        found = [info for info in self.layers.values() if self.grid(info.name) is not None]
        return [info.name for info in sorted(found, key=lambda i: i.order)]


def inspect_model(
    model: nn.Module, input_size: tuple[int, int], device: torch.device, *, hooks: bool = True
) -> ModelStructure:
    """Run one dummy forward and record every module's output.

    The default layer of a model with attention blocks over token layers is the
    last such block's first norm (``attention_block_norm``). Otherwise it is the
    last output with a map of spatial extent (h*w > 1) that is not produced by an
    adaptive (global) pooling module; among modules that return that very tensor
    (a block and its last child), the outermost one is chosen.
    """
    outputs: dict[str, tuple[int, torch.Tensor]] = {}
    finished: dict[str, int] = {}
    linear_inputs: dict[str, tuple[int, int]] = {}
    counter = [0]
    handles = []

    def make_hook(name: str, module: nn.Module):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, args: tuple[object, ...], out: object) -> None:
            counter[0] += 1
            finished[name] = counter[0]
            if isinstance(out, torch.Tensor):
                outputs[name] = (counter[0], out)
            if isinstance(module, nn.Linear) and args and isinstance(args[0], torch.Tensor):
                linear_inputs[name] = (counter[0], int(args[0].shape[-1]))

        return hook

    modules = dict(model.named_modules()) if hooks else {}
    for name, module in modules.items():
        if name:
            handles.append(module.register_forward_hook(make_hook(name, module)))
    try:
        with torch.inference_mode():
            dummy = torch.zeros(1, 3, *input_size, device=device)
            logits = model(dummy)
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise TypeError("a classifier must return logits of shape (N, num_classes)")

    layers = {
        name: LayerInfo(name, type(modules[name]).__name__, tuple(out.shape), order)
        for name, (order, out) in outputs.items()
    }
    if not hooks:  # a compiled module (TorchScript): no layer access
        return ModelStructure(
            num_classes=int(logits.shape[1]),
            layers={},
            default_layer="",
            final_linear=None,
            embedding_dim=0,
        )
    grids = _grids(model, input_size, outputs, modules)
    default_layer = attention_block_norm(modules, finished, grids) or _default_layer(
        outputs, modules, grids
    )
    final_linear = max(linear_inputs, key=lambda n: linear_inputs[n][0]) if linear_inputs else None
    if final_linear is not None:
        embedding_dim = linear_inputs[final_linear][1]
    else:
        embedding_dim = grids[default_layer].channels
    conv_layers = tuple(n for n, m in modules.items() if isinstance(m, nn.Conv2d) and n in layers)
    relu_count = sum(1 for m in modules.values() if isinstance(m, nn.ReLU))
    unique = {id(out): out for _, out in outputs.values()}
    activation_bytes = sum(t.numel() * t.element_size() for t in unique.values())
    return ModelStructure(
        num_classes=int(logits.shape[1]),
        layers=layers,
        default_layer=default_layer,
        final_linear=final_linear,
        embedding_dim=embedding_dim,
        conv_layers=conv_layers,
        relu_count=relu_count,
        activation_bytes=int(activation_bytes),
        grids=grids,
    )


def _grids(
    model: nn.Module,
    input_size: tuple[int, int],
    outputs: dict[str, tuple[int, torch.Tensor]],
    modules: dict[str, nn.Module],
) -> dict[str, LayerGrid]:
    patchify = sorted(
        (order, tuple(out.shape))
        for name, (order, out) in outputs.items()
        if is_patchify(modules[name]) and out.dim() == 4
    )
    grid = patch_grid(model, input_size, (shape for _, shape in patchify))
    shapes = {name: tuple(out.shape) for name, (_, out) in outputs.items()}
    return layer_grids(shapes, input_size, grid, prefix_tokens(model))


def _default_layer(
    outputs: dict[str, tuple[int, torch.Tensor]],
    modules: dict[str, nn.Module],
    grids: dict[str, LayerGrid],
) -> str:
    candidates = [
        (order, name, out)
        for name, (order, out) in outputs.items()
        if name in grids
        and grids[name].height * grids[name].width > 1
        and not isinstance(modules[name], _ADAPTIVE_POOLS)
    ]
    if not candidates:
        raise TypeError(
            "the model has no layer with a spatial (N, C, h, w) output or patch tokens: "
            "is it an image classifier?"
        )
    _, _, last_out = max(candidates, key=lambda c: c[0])
    same_tensor = [(order, name) for order, name, out in candidates if out is last_out]
    # Outermost first (fewest dots), then the one that finished first.
    same_tensor.sort(key=lambda c: (c[1].count("."), c[0]))
    return same_tensor[0][1] if same_tensor else max(candidates, key=lambda c: c[0])[1]
