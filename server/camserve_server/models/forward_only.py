"""A classifier that can only run forward: no layers to hook, no gradients (an ONNX graph).

``ExplainableModel`` wraps one of these instead of an ``nn.Module``; the methods
that only read logits of (perturbed) inputs call ``ExplainableModel.forward``
and run on it unchanged, and ``embed`` serves the default embedding.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .inspection import ModelStructure


class ForwardOnlyClassifier(Protocol):
    """Logits ``(N, C)`` for an input batch ``(N, 3, H, W)``, on the input's device."""

    @property
    def structure(self) -> ModelStructure:
        """Classes, embedding size and per-sample activation bytes (for chunking); no layers."""
        ...

    @property
    def embedding_layer(self) -> str | None:
        """What ``embed`` returns, e.g. ``fc:input``; None when the graph offers no embedding."""
        ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding ``(N, D)`` and the logits ``(N, C)`` of one forward pass."""
        ...
