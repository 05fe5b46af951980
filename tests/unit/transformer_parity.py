"""pytorch-grad-cam on the tiny transformers, with its documented ``reshape_transform``.

The recipes are written out per model, independently of camserve's own grid
detection: ``vit_example.py`` drops the class token (DeiT distilled: class and
distillation tokens) and lays the patches on the grid; ``swinT_example.py``
reshapes the tokens (or timm's channels-last map) onto the grid; both bring the
channels first. Every model's default layer has a 4x4 grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

Reshape = Callable[[torch.Tensor], torch.Tensor]
GRID = (4, 4)


def vit_reshape(prefix: int, height: int = GRID[0], width: int = GRID[1]) -> Reshape:
    """``vit_example.py``'s transform, dropping ``prefix`` tokens."""

    def reshape_transform(tensor: torch.Tensor) -> torch.Tensor:
        result = tensor[:, prefix:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    return reshape_transform


def swin_reshape(height: int = GRID[0], width: int = GRID[1]) -> Reshape:
    """``swinT_example.py``'s transform; a channels-last map ``(N, h, w, C)`` passes the
    reshape unchanged."""

    def reshape_transform(tensor: torch.Tensor) -> torch.Tensor:
        result = tensor.reshape(tensor.size(0), height, width, tensor.size(-1))
        return result.transpose(2, 3).transpose(1, 2)

    return reshape_transform


RECIPES: dict[str, Reshape] = {
    "torchvision_vit": vit_reshape(prefix=1),
    "timm_vit": vit_reshape(prefix=1),
    "timm_deit_distilled": vit_reshape(prefix=2),
    "timm_swin": swin_reshape(),
    "torchvision_swin": swin_reshape(),
}


def reference_heatmaps(
    cam_class: type[Any],
    reference: nn.Module,
    layer: str,
    reshape: Reshape,
    x: torch.Tensor,
    classes: list[int],
) -> torch.Tensor:
    """pytorch-grad-cam's heatmaps ``(N, H, W)``: sample ``i`` of ``x`` for ``classes[i]``.

    An input that requires grad makes the frozen reference's layer output require
    grad, which pytorch-grad-cam needs to hook the layer's gradient.
    """
    cam = cam_class(
        model=reference, target_layers=[reference.get_submodule(layer)], reshape_transform=reshape
    )
    try:
        maps = cam(
            input_tensor=x.clone().requires_grad_(True),
            targets=[ClassifierOutputTarget(c) for c in classes],
        )
    finally:
        cam.activations_and_grads.release()
    return torch.from_numpy(np.asarray(maps, dtype=np.float32))


def reshaped_activation(
    module: nn.Module, layer: str, reshape: Reshape, x: torch.Tensor
) -> torch.Tensor:
    """The reshaped output of ``layer`` for ``x``, cloned before a later operation can touch it."""
    captured: list[torch.Tensor] = []
    handle = module.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: captured.append(reshape(out.detach().clone()))
    )
    try:
        with torch.no_grad():
            module(x)
    finally:
        handle.remove()
    return captured[0]


def non_constant(maps: torch.Tensor) -> torch.Tensor:
    """Per map: does it span more than half of [0, 1] (minmax-scaled, not empty)?"""
    flat = maps.flatten(1)
    return (flat.amax(dim=1) - flat.amin(dim=1)) > 0.5


def max_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest absolute difference of two tensors of the same shape."""
    assert actual.shape == expected.shape, f"shapes differ: {actual.shape} vs {expected.shape}"
    return float((actual.float() - expected.float()).abs().max())
