"""Which layers give map grids, read off the probe forward: ``LayerGrid`` per layer.

The patch grid ``(h, w)`` is the input size divided by the patch size (a
``patch_size`` attribute: timm's ``patch_embed.patch_size``, torchvision ViT's
``patch_size``), else the output size of the first patchifying convolution
(kernel = stride > 1, no padding: torchvision Swin's stem); hierarchical models
halve it per stage. The prefix tokens are timm's ``num_prefix_tokens`` where the
model has it, else ``T - h*w``. Without a patch grid, ``T - prefix`` must be a
square.

- ``(1, T, C)``: tokens when ``T - prefix`` fills the patch grid, or, with no
  prefix, a stage's grid.
- ``(1, a, b, C)``: channels last when ``(a, b)`` is a stage's grid and
  ``(b, C)`` is not (then it is read as a convolution's ``(C, h, w)``).
- any other ``(1, C, h, w)``: channels first, as a convolution's output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from torch import nn

from .layer_grid import LayerGrid

Shape = tuple[int, ...]


def patch_size(model: nn.Module) -> tuple[int, int] | None:
    """The first ``patch_size`` attribute (an int or a pair of ints) of the model or a submodule."""
    for module in model.modules():
        size = getattr(module, "patch_size", None)
        if isinstance(size, int) and size > 0:
            return (size, size)
        if (
            isinstance(size, tuple | list)
            and len(size) == 2
            and all(isinstance(s, int) and s > 0 for s in size)
        ):
            return (int(size[0]), int(size[1]))
    return None


def prefix_tokens(model: nn.Module) -> int | None:
    """timm's ``num_prefix_tokens`` (class, distillation and register tokens), if present."""
    for module in model.modules():
        count = getattr(module, "num_prefix_tokens", None)
        if isinstance(count, int) and count >= 0:
            return count
    return None


def is_patchify(module: nn.Module) -> bool:
    """A convolution that cuts its input into non-overlapping patches (kernel = stride > 1)."""
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == module.stride
        and max(module.stride) > 1
        and module.padding in ((0, 0), "valid")
    )


def patch_grid(
    model: nn.Module, input_size: tuple[int, int], patchify_outputs: Iterable[Shape]
) -> tuple[int, int] | None:
    """The patch grid at ``input_size``: from the patch size, else from the first
    patchifying convolution's output ``(1, C, h, w)`` (given in execution order)."""
    size = patch_size(model)
    if size is not None:
        return (input_size[0] // size[0], input_size[1] // size[1])
    for shape in patchify_outputs:
        return (int(shape[-2]), int(shape[-1]))
    return None


def stage_grids(grid: tuple[int, int]) -> list[tuple[int, int]]:
    """The grid and its halvings (rounded up) down to 1x1: the stages of a hierarchical model."""
    grids = [grid]
    while grids[-1] != (1, 1):
        height, width = grids[-1]
        grids.append((max(1, -(-height // 2)), max(1, -(-width // 2))))
    return grids


def layer_grids(
    shapes: Mapping[str, Shape],
    input_size: tuple[int, int],
    grid: tuple[int, int] | None,
    prefix: int | None,
) -> dict[str, LayerGrid]:
    """Every probe output (batch of 1) that is a map grid, by layer name."""
    stages = stage_grids(grid) if grid is not None else []
    found: dict[str, LayerGrid] = {}
    for name, shape in shapes.items():
        if not shape or shape[0] != 1:
            continue  # not one row per sample (e.g. Swin's windows)
        layer_grid: LayerGrid | None = None
        if len(shape) == 4:
            layer_grid = _four_dimensional(shape, input_size, stages)
        elif len(shape) == 3:
            layer_grid = _tokens(shape, input_size, stages, prefix)
        if layer_grid is not None:
            found[name] = layer_grid
    return found


def _four_dimensional(
    shape: Shape, input_size: tuple[int, int], stages: list[tuple[int, int]]
) -> LayerGrid:
    _, a, b, c = shape
    if (a, b) in stages and (b, c) not in stages:
        return LayerGrid("channels_last", c, a, b, input_size)
    return LayerGrid("channels_first", a, b, c, input_size)


def _tokens(
    shape: Shape, input_size: tuple[int, int], stages: list[tuple[int, int]], prefix: int | None
) -> LayerGrid | None:
    _, count, channels = shape
    if stages:
        height, width = stages[0]
        extra = count - height * width
        known = extra == prefix if prefix is not None else extra < height * width
        if extra == 0 or (extra > 0 and known):
            return LayerGrid("tokens", channels, height, width, input_size, extra)
        for height, width in stages[1:]:
            if count == height * width:
                return LayerGrid("tokens", channels, height, width, input_size)
        return None
    side = math.isqrt(count - (prefix or 0)) if count >= (prefix or 0) else 0
    extra = count - side * side
    if side < 2 or (prefix is not None and extra != prefix) or extra > side:
        return None
    return LayerGrid("tokens", channels, side, side, input_size, extra)
