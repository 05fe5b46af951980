"""pytorch-grad-cam on the tiny transformers, with its documented ``reshape_transform``.

The recipes are written out per model, independently of camserve's own grid
detection: ``vit_example.py`` drops the class token (DeiT distilled: class and
distillation tokens) and lays the patches on the grid; ``swinT_example.py``
reshapes the tokens (or timm's channels-last map) onto the grid; both bring the
channels first. Every model's default layer has a 4x4 grid.
"""

from __future__ import annotations

from typing import Any

import parity_rows
import torch
from parity_rows import Reshape, layer_activation, max_difference, non_constant
from torch import nn

__all__ = ["RECIPES", "max_difference", "non_constant", "reference_heatmaps", "reshaped_activation"]
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
    """pytorch-grad-cam's heatmaps ``(N, H, W)`` with the model's ``reshape_transform``."""
    return parity_rows.reference_heatmaps(cam_class, reference, layer, x, classes, reshape=reshape)


def reshaped_activation(
    module: nn.Module, layer: str, reshape: Reshape, x: torch.Tensor
) -> torch.Tensor:
    """The reshaped output of ``layer`` for ``x``, cloned before a later operation can touch it."""
    return layer_activation(module, layer, x, reshape=reshape)
