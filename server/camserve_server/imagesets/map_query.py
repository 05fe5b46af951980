"""The set's embeddings projected to 2-D, each point with its predicted class.

The projection is the engine's (``projection.embedding_map``: PCA, or t-SNE after van
der Maaten & Hinton 2008), run in the thread pool; ``max_points`` > 0 returns a seeded
sample of the projected points, and pictures are read only for the points returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import FailedPrecondition, InvalidArgument
from ..models.loading import LoadedModel
from . import prepare
from .context import ImageSetContext
from .projection import embedding_map
from .query_arguments import ShownMember, class_label, one_of, thumbnail_side
from .records import SetInfo

Projection = Literal["pca", "tsne"]
PROJECTIONS: tuple[Projection, ...] = ("pca", "tsne")


@dataclass(frozen=True, kw_only=True)
class MapPointItem(ShownMember):
    """A member and where the projection puts it."""

    xy: tuple[float, float]


@dataclass(frozen=True)
class MapAnswer:
    method: Projection
    points: list[MapPointItem]
    projected: int


async def embedding_map_query(
    context: ImageSetContext,
    name: str,
    method: str,
    seed: int,
    max_points: int,
    thumbnail_size: int,
) -> MapAnswer:
    """The set's embeddings projected to 2-D, each point with its predicted class."""
    started = time.perf_counter()
    projection = one_of("method", method, PROJECTIONS)
    if max_points < 0:
        raise InvalidArgument(f"max_points must be >= 0 (0 = every member), got {max_points}")
    side = thumbnail_side(thumbnail_size)
    # t-SNE and numpy take seeds in [0, 2**32); the proto's int32 may be negative.
    seed %= 1 << 32
    info = await context.describe(name)
    loaded = context.set_model(info)
    answer = await context.off_loop(
        _project, context, info, loaded, projection, seed, max_points, side
    )
    context.observe_latency(f"map_{projection}", started)
    return answer


def _project(
    context: ImageSetContext,
    info: SetInfo,
    loaded: LoadedModel,
    method: Projection,
    seed: int,
    max_points: int,
    side: int,
) -> MapAnswer:
    store = context.store
    ids, matrix = store.matrix(info.name)
    if len(ids) < 2:
        raise FailedPrecondition(
            f"image set {info.name!r} has {len(ids)} images; a map needs at least 2"
        )
    xy = np.asarray(embedding_map(ids, matrix, method=method, seed=seed), dtype=np.float64)
    chosen = np.arange(len(ids))
    if 0 < max_points < len(ids):
        chosen = np.sort(np.random.default_rng(seed).choice(len(ids), max_points, False))
    # Labels come with the embeddings; pictures are read only when asked for, and
    # only for the points returned.
    labels = store.predictions(info.name)
    kept = [i for i in chosen.tolist() if ids[i] in labels.row]
    images = store.images(info.name, [ids[i] for i in kept]) if side else []
    points = []
    for n, i in enumerate(kept):
        predicted = int(labels.predicted[labels.row[ids[i]]])
        points.append(
            MapPointItem(
                id=ids[i],
                xy=(float(xy[i, 0]), float(xy[i, 1])),
                predicted=predicted,
                label=class_label(loaded, predicted),
                thumbnail=prepare.thumbnail(images[n], side) if side else b"",
            )
        )
    return MapAnswer(method=method, points=points, projected=len(ids))


__all__ = ["PROJECTIONS", "MapAnswer", "MapPointItem", "Projection", "embedding_map_query"]
