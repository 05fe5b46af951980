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
from .layer_pass import layer_forward, layer_gradients


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

    def cam_forward_only(
        self, batch: BatchInput, activation: torch.Tensor, logits: torch.Tensor, rows: Rows
    ) -> torch.Tensor:
        """The map ``(M, h, w)`` for methods that need no gradient."""
        raise NotImplementedError

    def run(self, batch: BatchInput) -> BatchResult:
        if self.needs_gradients:
            passed = layer_gradients(batch)
            activation, logits, rows = passed.activation, passed.logits, passed.rows
            cam = self.cam(activation[rows.sample], passed.gradients)
        else:
            activation, logits = layer_forward(batch)
            rows = Rows.from_targets(resolve_targets(batch.targets, logits), batch.model.device)
            with torch.inference_mode():
                cam = self.cam_forward_only(batch, activation, logits, rows)
        heatmaps, empty = cam_heatmaps(cam, batch.size)
        samples = package(rows, logits, heatmaps, cam.detach().float(), empty)
        return self.result(batch, samples, activations=activation, logits=logits)
