"""The CAM family's shared machinery: one forward, a backward to the layer, one hook to override.

Like pytorch-grad-cam, most methods only say how to weigh channels
(``channel_weights``); methods without channel weights override ``cam`` itself;
forward-only methods override ``cam_forward_only``.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from .base import BatchInput, BatchResult, Family, Method, Rows, package, resolve_targets
from .heatmap import cam_heatmaps
from .layer_pass import LayerRead, layer_forward, layer_gradients


class CamMethod(Method):
    """A class activation map at a layer: ``cam = sum_k w_k A_k``, then the heatmap pipeline."""

    family: ClassVar[Family] = "cam"
    uses_layer = True
    caches_layer = True

    @property
    def runs_head_on_cache_hit(self) -> bool:  # type: ignore[override]
        return self.needs_gradients

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """Per-row channel weights ``(M, K)`` from activations and gradients ``(M, K, h, w)``."""
        raise NotImplementedError

    def cam(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """The map ``(M, h, w)``; by default the weighted sum of channels."""
        weights = self.channel_weights(activation, gradients)
        return torch.einsum("mk,mkhw->mhw", weights, activation)

    def cam_forward_only(self, batch: BatchInput, layer: LayerRead, rows: Rows) -> torch.Tensor:
        """The map ``(M, h, w)`` for methods that need no gradient, from ``layer.maps``."""
        raise NotImplementedError

    def run(self, batch: BatchInput) -> BatchResult:
        layer: LayerRead
        if self.needs_gradients:
            passed = layer_gradients(batch)
            layer, rows = passed, passed.rows
            cam = self.cam(passed.maps[rows.sample], passed.gradients)
        else:
            layer = layer_forward(batch)
            rows = Rows.from_targets(
                resolve_targets(batch.targets, layer.logits), batch.model.device
            )
            with torch.inference_mode():
                cam = self.cam_forward_only(batch, layer, rows)
        heatmaps, empty = cam_heatmaps(cam, batch.size)
        samples = package(rows, layer.logits, heatmaps, cam.detach().float(), empty)
        return self.result(batch, samples, activations=layer.stored, logits=layer.logits)
