"""Index a batch of images in one forward pass: embeddings, per-channel maxima and their positions.

One forward with a hook on every indexed layer (and on the embedding layer) gives,
per image, what the set's queries need:

- the embedding: the output of the embedding layer flattened, or, for ``"{linear}:input"``,
  the input of that linear layer (the penultimate representation, the "CNN code" of
  cs231n's t-SNE figure), as ``Embed`` reports it;
- per channel ``c`` of each indexed layer ``A`` (shape ``(C, h, w)``): ``max_{i,j} A[c, i, j]``
  and its ``(i, j)``, the unit whose receptive field is the channel's maximally activating
  patch (Zeiler & Fergus 2014; Girshick et al. 2014);
- the predicted class and its softmax probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..errors import InvalidArgument
from ..models import ExplainableModel
from ..models.capture import INPUT_SUFFIX, forward_capture
from .records import MemberRecord

__all__ = ["INPUT_SUFFIX", "IndexedImage", "channel_maxima", "index_batch", "penultimate_layer"]


class IndexedImage(NamedTuple):
    """What indexing found for one image (a tuple, in the order the contract gives)."""

    embedding: np.ndarray  # float32 (D,)
    maxima: dict[str, np.ndarray]  # layer -> float32 (C,)
    positions: dict[str, np.ndarray]  # layer -> int32 (C, 2) (row, col)
    predicted: int
    probability: float

    def to_record(
        self, member_id: str, image_hash: str, image: bytes, pixels: np.ndarray
    ) -> MemberRecord:
        """The member record of this image: what was found (each field carries over by
        name), with its kept PNG ``image`` and its ``pixels`` thumbnail."""
        found = self._asdict()
        return MemberRecord(
            id=member_id, image_hash=image_hash, image=image, pixels=pixels, **found
        )


def penultimate_layer(model: ExplainableModel) -> str:
    """The default embedding layer: the final linear layer's input, else the default layer."""
    final = model.structure.final_linear
    return f"{final}{INPUT_SUFFIX}" if final is not None else model.default_layer


def channel_maxima(activation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and channel, the maximum of a ``(N, C, h, w)`` map and its ``(row, col)``.

    Returns float32 ``(N, C)`` maxima and int32 ``(N, C, 2)`` positions; a ``(N, C)``
    output (no spatial extent) has every position at ``(0, 0)``.
    """
    if activation.dim() == 2:
        activation = activation[:, :, None, None]
    if activation.dim() != 4:
        raise InvalidArgument(
            f"an indexed layer must output (N, C, h, w) or (N, C), got {tuple(activation.shape)}"
        )
    width = activation.shape[3]
    values, flat = activation.flatten(2).max(dim=2)
    positions = torch.stack((flat // width, flat % width), dim=-1)
    return values.float(), positions.to(torch.int32)


def index_batch(
    model: ExplainableModel,
    x: torch.Tensor,
    layers: Sequence[str],
    embedding_layer: str,
) -> list[IndexedImage]:
    """One forward pass over ``x`` ``(N, 3, H, W)`` with hooks; one ``IndexedImage`` per image."""
    layers = list(dict.fromkeys(model.resolve_layer(layer) for layer in layers))
    with torch.inference_mode():
        captured = forward_capture(model, x, [*layers, embedding_layer])
    logits = captured.logits
    assert logits is not None
    if logits.dim() != 2:
        raise InvalidArgument(f"model {model.name!r} returned {tuple(logits.shape)}, not (N, C)")
    probabilities = torch.softmax(logits.float(), dim=1)
    confidence, predicted = probabilities.max(dim=1)
    embeddings = captured.layers[embedding_layer].flatten(1).float().cpu().numpy()
    maxima: dict[str, np.ndarray] = {}
    positions: dict[str, np.ndarray] = {}
    for layer in layers:
        values, where = channel_maxima(captured.layers[layer])
        maxima[layer] = values.cpu().numpy()
        positions[layer] = where.cpu().numpy()
    return [
        IndexedImage(
            embedding=np.ascontiguousarray(embeddings[i]),
            maxima={layer: np.ascontiguousarray(maxima[layer][i]) for layer in layers},
            positions={layer: np.ascontiguousarray(positions[layer][i]) for layer in layers},
            predicted=int(predicted[i]),
            probability=float(confidence[i]),
        )
        for i in range(x.shape[0])
    ]
