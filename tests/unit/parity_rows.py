"""The engine's outputs one row per (sample, target), as the reference libraries give them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from camserve_server.methods import explain
from zoo import ZooModel

TOLERANCE = 1e-4  # the largest difference a map may have from its reference
TARGETS_PER_IMAGE = 3
# camserve's gradient CAMs and the pytorch-grad-cam classes they must equal.
GRADIENT_CAMS: dict[str, type[Any]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
}


def engine_rows(
    zoo: ZooModel,
    method: str,
    x: torch.Tensor,
    targets: list[list[int]],
    output: Literal["heatmaps", "raw"],
    *,
    layer: str | None = None,
    options: dict[str, object] | None = None,
) -> torch.Tensor:
    """The engine's ``output`` for every (sample, target) row, in row order: heatmaps
    ``(M, H, W)`` or raw attributions ``(M, 3, H, W)``; each sample explains its targets."""
    result = explain(zoo.model, method, x, targets=targets, layer=layer, options=options)
    rows = []
    for sample, classes in zip(result.samples, targets, strict=True):
        assert sample.targets.tolist() == classes
        row = sample.heatmaps if output == "heatmaps" else sample.raw
        assert row is not None
        rows.append(row)
    return torch.cat(rows)


Reshape = Callable[[torch.Tensor], torch.Tensor]


def reference_heatmaps(
    cam_class: type[Any],
    reference: nn.Module,
    layer: str,
    x: torch.Tensor,
    classes: list[int],
    *,
    reshape: Reshape | None = None,
) -> torch.Tensor:
    """pytorch-grad-cam's heatmaps ``(N, H, W)``: sample ``i`` of ``x`` for ``classes[i]``
    (with ``reshape`` as its ``reshape_transform``, for a transformer's tokens).

    The reference copy's weights are frozen like the engine's; an input that
    requires grad makes the layer's output require grad, which pytorch-grad-cam
    needs to hook the layer's gradient.
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


def layer_activation(
    module: nn.Module, layer: str, x: torch.Tensor, *, reshape: Reshape | None = None
) -> torch.Tensor:
    """The output of ``layer`` for ``x`` (reshaped by ``reshape``), cloned before any later
    operation can touch it."""
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        value = out.detach().clone()
        captured.append(value if reshape is None else reshape(value))

    handle = module.get_submodule(layer).register_forward_hook(keep)
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
