"""The ``ImageSetService`` methods, for both clients (see ``_calls``)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence

from camserve import _sets
from camserve._calls import Index, Unary
from camserve._inputs import ImageInput
from camserve.sets import ActivatingPatch, EmbeddingMap, ImageSet, Neighbour
from camserve.v1 import imagesets_pb2 as set_pb


def index(
    set: str,
    images: Mapping[str, ImageInput] | Iterable[ImageInput],
    model: str | None = None,
    layers: Sequence[str] | None = None,
    *,
    embedding_layer: str | None = None,
    progress: bool | _sets.Progress | None = True,
    timeout: float | None = None,
) -> Index:
    """Index ``images`` into the named set, created for ``model`` and ``layers`` when new.

    ``images`` is a mapping id -> image (path, bytes, PIL image or uint8 array) or a
    list of images (a path is named by its file name, anything else by its content
    hash). Images already in the set are skipped; an image that cannot be read or
    decoded fails alone (see ``IndexResult.failures``). ``layers`` default to the
    model's default layer, ``embedding_layer`` to the penultimate representation.
    ``progress``: True draws a bar on a terminal (a line every few seconds in a log); a
    callable gets ``(done, total)``.
    The call's deadline is ``timeout``, default the client's plus a second per image.

    A stream that ends with UNAVAILABLE (the server's maximum connection age, a
    restart, a dropped connection) is resumed: a new stream sends again only the
    images the server had not answered, after a short backoff, at most 5 times in a
    row without an answered image and within the deadline (``IndexResult.resumed``
    counts them). An image written just before a cut, its answer lost, comes back
    ``skipped`` with ``existing_id`` its own id.
    """
    run = _sets.IndexRun(
        set,
        images,
        model=model,
        layers=layers,
        embedding_layer=embedding_layer,
        progress=progress,
    )
    return Index(run, timeout)


def top_activating(
    set: str, layer: str | None, channel: int, k: int = 9, *, timeout: float | None = None
) -> Unary[list[ActivatingPatch]]:
    """The ``k`` members that most activate ``channel`` of ``layer`` (None: the set's
    first layer), highest first, each with the patch its maximal unit sees."""
    build = functools.partial(_sets.top_request, set, layer, channel, k)
    return Unary(lambda s: s.sets.TopActivating, build, _sets.top_items, timeout)


def neighbours(
    set: str,
    image: ImageInput | None = None,
    id: str | None = None,
    k: int = 10,
    space: str = "features",
    *,
    thumbnail_size: int = 0,
    timeout: float | None = None,
) -> Unary[list[Neighbour]]:
    """The ``k`` members nearest ``image`` or the member ``id`` (left out of its own
    neighbours), nearest first: 1 - cosine of embeddings (``space="features"``) or
    pixel distance (``"pixels"``). ``thumbnail_size`` > 0 adds each one's thumbnail."""
    build = functools.partial(_sets.neighbours_request, set, image, id, k, space, thumbnail_size)
    return Unary(
        lambda s: s.sets.NearestNeighbours, build, _sets.neighbour_items, timeout, reads_images=True
    )


def embedding_map(
    set: str,
    method: str = "tsne",
    *,
    seed: int = 0,
    max_points: int = 0,
    thumbnail_size: int = 0,
    timeout: float | None = None,
) -> Unary[EmbeddingMap]:
    """The set's embeddings projected to 2-D ("pca" or "tsne") on the server, each point
    with its predicted class; ``max_points`` > 0 returns a seeded sample of the points."""
    build = functools.partial(_sets.map_request, set, method, seed, max_points, thumbnail_size)
    return Unary(lambda s: s.sets.EmbeddingMap, build, _sets.embedding_map, timeout)


def sets(*, timeout: float | None = None) -> Unary[list[ImageSet]]:
    """Every image set on the server."""
    return Unary(lambda s: s.sets.ListSets, set_pb.ListSetsRequest, _sets.image_sets, timeout)


def describe_set(name: str, *, timeout: float | None = None) -> Unary[ImageSet]:
    """One set's description: model, layers, size, bytes used and limits."""
    build = functools.partial(_sets.describe_request, name)
    return Unary(lambda s: s.sets.DescribeSet, build, _sets.image_set, timeout)


def delete_set(name: str, *, timeout: float | None = None) -> Unary[int]:
    """Delete a set and its records; the bytes freed on the server."""
    build = functools.partial(_sets.delete_request, name)
    return Unary(lambda s: s.sets.DeleteSet, build, _sets.bytes_freed, timeout)


__all__ = [
    "delete_set",
    "describe_set",
    "embedding_map",
    "index",
    "neighbours",
    "sets",
    "top_activating",
]
