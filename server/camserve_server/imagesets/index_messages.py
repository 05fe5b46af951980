"""The messages of an indexing stream, free of protobuf: images in, progress out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .records import SetInfo


@dataclass(frozen=True)
class IncomingImage:
    """One image sent for indexing; an empty ``id`` means "its content hash"."""

    id: str
    encoded: bytes


@dataclass(frozen=True)
class IndexChunk:
    """One message of an indexing stream: the set's description (first) and images."""

    set: str = ""
    model: str = ""
    layers: tuple[str, ...] = ()
    embedding_layer: str = ""
    images: tuple[IncomingImage, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What happened to one image: ``indexed``, ``skipped`` or ``failed`` (with a status)."""

    id: str
    status: Literal["indexed", "skipped", "failed"]
    code: str = ""
    reason: str = ""
    existing_id: str = ""


@dataclass
class IndexProgress:
    """One progress report: the outcomes since the last one and the running totals."""

    outcomes: list[Outcome]
    received: int
    indexed: int
    skipped: int
    failed: int
    done: bool = False
    info: SetInfo | None = None


__all__ = ["IncomingImage", "IndexChunk", "IndexProgress", "Outcome"]
