"""Index uint8 images into a set without the RPC layer: batches of ``index_batch`` into a store.

The engine-level path the tests and the scale benchmark use; the service does the same
with decoding, size limits and the device workers around it. An image whose hash the set
already holds is skipped (re-sending is a no-op), and each batch is written as soon as it
is computed, so an interrupted run loses at most the batch in flight.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..models import ExplainableModel
from .indexer import index_batch
from .records import check_member_id
from .store import SetStore

PIXELS_SIDE = 32


@dataclass
class IngestCounts:
    """How many images were indexed, and how many skipped as already in the set."""

    indexed: int = 0
    skipped: int = 0


def encode_png(image: np.ndarray) -> bytes:
    """A uint8 ``(H, W, 3)`` image as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB").save(buffer, "PNG")
    return buffer.getvalue()


def pixel_thumbnail(image: np.ndarray, side: int = PIXELS_SIDE) -> np.ndarray:
    """The ``(side, side, 3)`` box-filtered thumbnail compared by pixel-space neighbours."""
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB")
    return np.asarray(picture.resize((side, side), Image.Resampling.BOX), dtype=np.uint8).copy()


def index_arrays(
    model: ExplainableModel,
    store: SetStore,
    name: str,
    items: Iterable[tuple[str, np.ndarray]],
    *,
    to_input: Callable[[np.ndarray], torch.Tensor],
    layers: Sequence[str],
    embedding_layer: str,
    batch_size: int = 64,
    on_batch: Callable[[IngestCounts], None] | None = None,
) -> IngestCounts:
    """Index ``(id, uint8 image at the model's input size)`` pairs into the set ``name``.

    ``to_input`` turns one image into the model's normalised ``(3, H, W)`` input.
    """
    counts = IngestCounts()
    pending: list[tuple[str, str, bytes, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        x = torch.stack([to_input(image) for _, _, _, image in pending]).to(model.device)
        results = index_batch(model, x, layers, embedding_layer)
        records = [
            found.to_record(member_id, image_hash, kept, pixel_thumbnail(image))
            for (member_id, image_hash, kept, image), found in zip(pending, results, strict=True)
        ]
        store.add(name, records)
        counts.indexed += len(records)
        pending.clear()
        if on_batch is not None:
            on_batch(counts)

    batch_hashes: set[str] = set()
    for member_id, image in items:
        check_member_id(member_id)
        kept = encode_png(image)
        image_hash = hashlib.sha256(kept).hexdigest()
        if image_hash in batch_hashes or store.has(name, image_hash) is not None:
            counts.skipped += 1
            continue
        batch_hashes.add(image_hash)
        pending.append((member_id, image_hash, kept, image))
        if len(pending) >= batch_size:
            flush()
            batch_hashes.clear()
    flush()
    return counts
