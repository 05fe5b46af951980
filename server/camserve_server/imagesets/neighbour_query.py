"""The members nearest a query image or member, in feature or pixel space.

The search is the engine's (``queries.nearest``: 1 - cosine of embeddings, or Euclidean
distance of pixel thumbnails); this module checks the request, embeds a query image on a device
worker and adds each neighbour's class and, when asked, its thumbnail.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgument
from ..models import ExplainableModel
from ..models.loading import LoadedModel
from ..runtime.device_slot import Priority
from . import prepare
from .context import ImageSetContext
from .indexer import index_batch
from .queries import SPACES, Neighbour, Space, nearest
from .query_arguments import ShownMember, class_label, in_range, one_of, thumbnail_side
from .records import SetInfo

MAX_NEIGHBOURS = 1000
DEFAULT_NEIGHBOURS = 10


@dataclass(frozen=True, kw_only=True)
class NeighbourItem(ShownMember):
    """A member near the query, and its distance to it."""

    distance: float


@dataclass(frozen=True)
class NeighboursAnswer:
    space: Space
    neighbours: list[NeighbourItem]
    query_predicted: int
    query_label: str


async def neighbours_query(
    context: ImageSetContext,
    name: str,
    image: bytes | None,
    member_id: str | None,
    k: int,
    space: str,
    thumbnail_size: int,
) -> NeighboursAnswer:
    """The ``k`` members nearest a query image or member, in feature or pixel space."""
    started = time.perf_counter()
    searched = one_of("space", space, SPACES)
    if (image is None) == (member_id is None):
        raise InvalidArgument("give exactly one query: an image or the id of a member")
    k = in_range("k", k, DEFAULT_NEIGHBOURS, MAX_NEIGHBOURS)
    side = thumbnail_side(thumbnail_size)
    info = await context.describe(name)
    loaded = context.set_model(info)
    query: np.ndarray | str
    if member_id is not None:
        labels = await context.off_loop(context.store.predictions, info.name)
        query, predicted = member_id, labels.of(info.name, member_id)
    else:
        assert image is not None
        vector, pixels, predicted = await _embed_query(context, info, loaded, image)
        query = vector if searched == "features" else pixels
    found = await context.off_loop(nearest, context.store, info.name, query, k, searched)
    items = await context.off_loop(_neighbour_items, context, info, loaded, found, side)
    context.observe_latency(f"neighbours_{searched}", started)
    return NeighboursAnswer(
        space=searched,
        neighbours=items,
        query_predicted=predicted,
        query_label=class_label(loaded, predicted),
    )


async def _embed_query(
    context: ImageSetContext, info: SetInfo, loaded: LoadedModel, image: bytes
) -> tuple[np.ndarray, np.ndarray, int]:
    """A query image's embedding, pixel thumbnail and predicted class."""
    if not image:
        raise InvalidArgument("the query image bytes are empty")
    ready = await context.off_loop(
        prepare.prepare, loaded, image, context.settings.max_image_pixels
    )
    x = ready.x[None]
    embedding_layer = info.embedding_layer

    def step(models: dict[str, ExplainableModel]) -> tuple[np.ndarray, int]:
        model = models[loaded.name]
        result = index_batch(model, x.to(model.device), (), embedding_layer)[0]
        return result.embedding, result.predicted

    vector, predicted = await context.on_device(step, Priority.LIGHT)
    return vector, ready.pixels, predicted


def _neighbour_items(
    context: ImageSetContext,
    info: SetInfo,
    loaded: LoadedModel,
    found: Sequence[Neighbour],
    side: int,
) -> list[NeighbourItem]:
    store = context.store
    labels = store.predictions(info.name)
    ids = [neighbour.id for neighbour in found]
    images = store.images(info.name, ids) if side else [b""] * len(ids)  # one read
    items = []
    for neighbour, image in zip(found, images, strict=True):
        predicted = labels.of(info.name, neighbour.id)
        items.append(
            NeighbourItem(
                id=neighbour.id,
                distance=neighbour.distance,
                predicted=predicted,
                label=class_label(loaded, predicted),
                thumbnail=prepare.thumbnail(image, side) if side else b"",
            )
        )
    return items


__all__ = [
    "DEFAULT_NEIGHBOURS",
    "MAX_NEIGHBOURS",
    "SPACES",
    "NeighbourItem",
    "NeighboursAnswer",
    "Space",
    "neighbours_query",
]
