"""Index one batch of a stream: prepare each image, one model pass for the new ones, store.

Images are prepared in the thread pool; those whose bytes the set (or this call)
already holds are skipped with the holder's id; the rest go through one forward pass
on a device worker as a ``BACKGROUND`` step and are written one record at a time, so
a full set fails the rest of the batch and a store failure ends the call.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import torch

from ..errors import CamserveError
from ..models import ExplainableModel
from ..models.loading import LoadedModel
from ..runtime.device_slot import Priority
from . import prepare
from .context import ImageSetContext
from .incoming import ready_image
from .index_messages import IncomingImage, Outcome
from .indexer import IndexedImage, index_batch
from .records import MemberRecord, SetInfo

Fresh = list[tuple[int, str, prepare.PreparedImage]]  # (position in batch, member id, image)


@dataclass
class StreamCounts:
    """The running totals of one indexing call."""

    received: int = 0
    indexed: int = 0
    skipped: int = 0
    failed: int = 0
    seen: dict[str, str] = field(default_factory=dict)  # hash -> id, within this call

    def count(self, outcome: Outcome) -> None:
        if outcome.status == "indexed":
            self.indexed += 1
        elif outcome.status == "skipped":
            self.skipped += 1
        else:
            self.failed += 1


async def index_images(
    context: ImageSetContext,
    info: SetInfo,
    loaded: LoadedModel,
    batch: list[IncomingImage],
    counts: StreamCounts,
) -> list[Outcome]:
    """Each image's outcome, in the batch's order; ``counts`` are updated."""
    outcomes: dict[int, Outcome] = {}
    fresh: Fresh = []
    max_pixels = context.settings.max_image_pixels
    prepared = await asyncio.gather(
        *(
            context.off_loop(ready_image, context.store, info, loaded, image, max_pixels)
            for image in batch
        )
    )
    for position, result in enumerate(prepared):
        if isinstance(result, Outcome):
            outcomes[position] = result
            continue
        member_id, image_hash, ready, existing = result
        existing = existing or counts.seen.get(image_hash)
        if existing is not None:
            outcomes[position] = Outcome(member_id, "skipped", existing_id=existing)
            continue
        assert ready is not None  # decoded whenever the set does not hold the bytes
        counts.seen[image_hash] = member_id
        fresh.append((position, member_id, ready))
    if fresh:
        written = await _compute_and_store(context, info, loaded, fresh)
        outcomes.update(written)
    ordered = [outcomes[i] for i in range(len(batch))]
    for outcome in ordered:
        counts.count(outcome)
        context.metrics.set_images.labels(info.model, outcome.status).inc()
    return ordered


async def _compute_and_store(
    context: ImageSetContext, info: SetInfo, loaded: LoadedModel, fresh: Fresh
) -> dict[int, Outcome]:
    x = torch.stack([ready.x for _, _, ready in fresh])
    layers, embedding_layer = info.layers, info.embedding_layer

    def step(models: dict[str, ExplainableModel]) -> list[IndexedImage]:
        model = models[loaded.name]
        return index_batch(model, x.to(model.device), layers, embedding_layer)

    started = time.perf_counter()
    results = await context.on_device(step, Priority.BACKGROUND)
    context.observe_latency("index_batch", started)
    records = [
        result.to_record(member_id, ready.image_hash, ready.kept_png, ready.pixels)
        for (_, member_id, ready), result in zip(fresh, results, strict=True)
    ]
    return await context.off_loop(_store_records, context, info.name, fresh, records)


def _store_records(
    context: ImageSetContext, name: str, fresh: Fresh, records: list[MemberRecord]
) -> dict[int, Outcome]:
    """Write the records; a full set fails the rest, a store failure ends the call."""
    outcomes: dict[int, Outcome] = {}
    full: CamserveError | None = None
    for (position, member_id, _), record in zip(fresh, records, strict=True):
        if full is None:
            try:
                context.store.add(name, [record])
                outcomes[position] = Outcome(member_id, "indexed")
                continue
            except CamserveError as exc:
                if exc.status != "RESOURCE_EXHAUSTED":
                    raise
                full = exc
        outcomes[position] = Outcome(member_id, "failed", code=full.status, reason=str(full))
    return outcomes


__all__ = ["StreamCounts", "index_images"]
