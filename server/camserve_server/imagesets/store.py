"""Where image sets live: the ``SetStore`` protocol, shared checks, and the backend factory.

Two backends keep to the protocol: ``MemorySetStore`` (in process, bounded in bytes)
and ``RedisSetStore`` (shared by replicas; a failure is ``Unavailable``, never a
half-written record). Queries read members through ``matrix``, ``channel_column`` and
``predictions``, which give whole-set arrays so a search is one matrix product, and
read the kept pictures of only the members they answer with, all at once (``images``);
both backends stack those arrays once per version of a set (``query_arrays``).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import InvalidArgument, NotFound, choices
from .records import MemberRecord, SetExists, SetFull, SetInfo

MIB = 1 << 20
DEFAULT_MAX_IMAGES = 100_000
DEFAULT_MAX_BYTES = 1024 * MIB
RECORD_OVERHEAD = 128  # bytes charged per member for its key, hash index entry and bookkeeping


@dataclass(frozen=True)
class Predictions:
    """Each member's predicted class and its probability, row ``i`` for ``ids[i]``."""

    ids: list[str]
    predicted: np.ndarray  # (N,) int64
    probability: np.ndarray  # (N,) float32
    row: dict[str, int]  # id -> its row

    def of(self, set_name: str, member_id: str) -> int:
        """The predicted class of ``member_id``; ``NotFound`` when the set has no such id."""
        found = self.row.get(member_id)
        if found is None:
            raise member_not_found(set_name, member_id)
        return int(self.predicted[found])


class SetStore(Protocol):
    """Named image sets of ``MemberRecord``; thread-safe; errors are the project's own."""

    def create(self, info: SetInfo) -> None:
        """Create the set; ``SetExists`` if it exists with another model or layers, else a no-op."""
        ...

    def get(self, name: str) -> SetInfo:
        """The set's description (current size and bytes); ``NotFound`` if absent."""
        ...

    def list(self) -> list[SetInfo]:
        """Every set, by name."""
        ...

    def delete(self, name: str) -> int:
        """Remove the set and all its members; the bytes freed. ``NotFound`` if absent."""
        ...

    def has(self, name: str, image_hash: str) -> str | None:
        """The id of the member holding the image with that hash, or ``None``."""
        ...

    def add(self, name: str, records: builtins.list[MemberRecord]) -> None:
        """Add members (an id already present is replaced); ``SetFull`` past a limit.

        Each record is written whole or not at all; records before a failure stay written.
        """
        ...

    def members(self, name: str) -> Iterator[MemberRecord]:
        """Every member, in insertion order for the memory backend, by id for Redis."""
        ...

    def matrix(self, name: str) -> tuple[builtins.list[str], np.ndarray]:
        """Member ids and their ``(N, D)`` float32 embeddings, cached until the set changes."""
        ...

    def channel_column(
        self, name: str, layer: str
    ) -> tuple[builtins.list[str], np.ndarray, np.ndarray]:
        """Member ids, ``(N, C)`` channel maxima and ``(N, C, 2)`` their positions in ``layer``."""
        ...

    def predictions(self, name: str) -> Predictions:
        """Every member's predicted class and probability, cached until the set changes.

        Read with the embeddings (Redis: from the same ``core`` fields, no image), so a
        map or a list of answers labels its members without reading any member again.
        """
        ...

    def images(self, name: str, ids: Sequence[str]) -> builtins.list[bytes]:
        """The kept input of each of ``ids``, in order, read together (Redis: one pipeline
        per 500 ids, the ``media`` field only); ``NotFound`` naming the first missing id."""
        ...

    def member(self, name: str, member_id: str) -> MemberRecord:
        """One member; ``NotFound`` if the set has no such id."""
        ...

    # Added to the contract: backends holding connections release them here.
    def close(self) -> None:
        """Release connections; the memory backend has none."""
        ...


def record_cost(blob_size: int, member_id: str) -> int:
    """Bytes charged to a set for one member stored as a ``blob_size`` byte record."""
    return blob_size + len(member_id.encode()) + RECORD_OVERHEAD


def check_room(info: SetInfo, new_images: int, new_bytes: int) -> None:
    """``SetFull`` when ``new_images`` more members or ``new_bytes`` more bytes would not fit."""
    if info.size + new_images > info.max_images:
        raise SetFull(
            f"image set {info.name!r} holds {info.size} of at most {info.max_images} images; "
            f"adding {new_images} more would pass the limit (delete the set or make a new one)"
        )
    if info.bytes_used + new_bytes > info.max_bytes:
        raise SetFull(
            f"image set {info.name!r} uses {info.bytes_used} of at most {info.max_bytes} bytes; "
            f"adding {new_bytes} more would pass the limit"
        )


def check_create(existing: SetInfo | None, info: SetInfo) -> bool:
    """Whether to write ``info``: ``False`` if an equal set exists; ``SetExists`` if unequal."""
    if info.max_images < 1 or info.max_bytes < 1:
        raise InvalidArgument("a set's max_images and max_bytes must be >= 1")
    if info.embedding_layer == "":
        raise InvalidArgument("a set needs an embedding layer")
    if existing is None:
        return True
    if not existing.same_shape(info):
        raise SetExists(
            f"image set {info.name!r} exists for model {existing.model!r}, layers "
            f"{list(existing.layers)} and embedding layer {existing.embedding_layer!r}; "
            f"it cannot be indexed with model {info.model!r}, layers {list(info.layers)} and "
            f"embedding layer {info.embedding_layer!r} (delete it or use another name)"
        )
    return False


def set_not_found(name: str) -> NotFound:
    """The error for a missing set. It names only the set asked for: the other sets'
    names belong to whoever made them, and ``ListSets`` is the place to look them up."""
    return NotFound(f"no image set {name!r}")


def member_not_found(name: str, member_id: str) -> NotFound:
    return NotFound(f"image set {name!r} has no image with id {member_id!r}")


def check_layer(info: SetInfo, layer: str) -> str:
    """``layer`` if the set indexed it, else ``InvalidArgument`` listing its layers."""
    if layer not in info.layers:
        raise InvalidArgument(
            f"image set {info.name!r} did not index layer {layer!r}; "
            f"indexed layers: {choices(info.layers)}"
        )
    return layer


def open_set_store(
    redis_url: str | None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    prefix: str = "camserve:sets:v1",
) -> SetStore:
    """The Redis backend for ``redis_url`` when given, else the in-process one of ``max_bytes``."""
    if redis_url:
        from .store_redis import RedisSetStore

        return RedisSetStore.from_url(redis_url, prefix=prefix)
    from .store_memory import MemorySetStore

    return MemorySetStore(max_bytes=max_bytes)


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_IMAGES",
    "Predictions",
    "SetExists",
    "SetFull",
    "SetInfo",
    "SetStore",
    "check_create",
    "check_layer",
    "check_room",
    "open_set_store",
    "record_cost",
]
