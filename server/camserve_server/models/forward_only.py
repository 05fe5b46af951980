"""A classifier that can only run forward: no layers to hook, no gradients (an ONNX graph).

``ExplainableModel`` wraps one of these instead of an ``nn.Module``; the methods
that only read logits of (perturbed) inputs call ``ExplainableModel.forward``
and run on it unchanged, and ``embed`` serves the default embedding. Layers
listed in ``structure.layers`` are read by ``forward_with_layer`` (the
activation and the logits of one pass), which serves the forward-only layer
methods; ``head`` runs the part after a layer on an activation where the
classifier splits there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from .inspection import ModelStructure


class ForwardOnlyClassifier(Protocol):
    """Logits ``(N, C)`` for an input batch ``(N, 3, H, W)``, on the input's device."""

    @property
    def structure(self) -> ModelStructure:
        """Classes, layers it can output, embedding size and per-sample activation bytes."""
        ...

    @property
    def embedding_layer(self) -> str | None:
        """What ``embed`` returns, e.g. ``fc:input``; None when the graph offers no embedding."""
        ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding ``(N, D)`` and the logits ``(N, C)`` of one forward pass."""
        ...

    def has_tensor(self, name: str) -> bool:
        """Whether ``name`` is an internal tensor that can be read like a layer."""
        ...

    def forward_with_layer(self, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's activation ``(N, ...)`` and the logits ``(N, C)`` of one forward pass."""
        ...

    def splits_at(self, layer: str) -> bool:
        """Whether the logits depend on the input only through ``layer`` (a head exists)."""
        ...

    def head(self, layer: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Logits from the layer's activation alone; None where the classifier does not split."""
        ...
