"""What the image-set calls return: plain dataclasses of Python and numpy values.

Pictures (patches, thumbnails) arrive as PNG bytes; the ``patch`` and ``image``
properties open them with Pillow, imported only then.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from camserve import _reprs

if TYPE_CHECKING:
    from PIL import Image as PILImage

IndexStatus = Literal["indexed", "skipped", "failed"]


def open_png(data: bytes) -> PILImage.Image:
    """PNG bytes as an RGB PIL image."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        return opened.convert("RGB")


@dataclass(frozen=True)
class ImageSet:
    """A named image set on the server: what indexed it, its size and its limits.

    ``created`` is in seconds since the Unix epoch; ``bytes_used`` is what its records
    take in the server's store.
    """

    name: str
    model: str
    layers: tuple[str, ...]
    embedding_layer: str
    size: int
    bytes_used: int
    created: float
    max_images: int
    max_bytes: int


@dataclass(frozen=True)
class IndexOutcome:
    """One image of an ``index`` call: indexed, skipped (already a member) or failed.

    ``code`` names the gRPC status of a failure (e.g. "INVALID_ARGUMENT"); images the
    SDK could not read fail before sending, with code "INVALID_ARGUMENT".
    """

    id: str
    status: IndexStatus
    reason: str = ""
    code: str = ""
    existing_id: str = ""


@dataclass(frozen=True)
class IndexResult:
    """What an ``index`` call did: counts, one outcome per image, and the set afterwards.

    ``resumed`` counts the streams re-opened after one ended with UNAVAILABLE (e.g. at
    the server's maximum connection age); each image is counted once across them.
    """

    set: ImageSet
    indexed: int
    skipped: int
    failed: int
    outcomes: list[IndexOutcome] = field(default_factory=list)
    resumed: int = 0

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)

    @property
    def failures(self) -> list[IndexOutcome]:
        """The images that were not indexed, with their reasons."""
        return [o for o in self.outcomes if o.status == "failed"]


@dataclass(frozen=True)
class ActivatingPatch:
    """A member that strongly activates ``channel`` of ``layer``, and what its maximal unit sees.

    ``position`` is the (row, col) of the maximum in the layer's map; ``box`` the
    unit's receptive field (x0, y0, x1, y1; x1, y1 exclusive) in the model's input
    pixels; ``patch_png`` that region of the image as the model saw it.
    """

    id: str
    activation: float
    position: tuple[int, int]
    box: tuple[int, int, int, int]
    patch_png: bytes
    predicted: int
    label: str
    layer: str
    channel: int

    @property
    def patch(self) -> PILImage.Image:
        """The patch as a PIL image."""
        return open_png(self.patch_png)

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)

    def _repr_png_(self) -> bytes:
        """The patch, for notebooks."""
        return self.patch_png


@dataclass(frozen=True)
class Neighbour:
    """A member near the query; ``distance`` is 1 - cosine (features) or pixel L2 (pixels)."""

    id: str
    distance: float
    predicted: int
    label: str
    thumbnail_png: bytes = b""

    @property
    def thumbnail(self) -> PILImage.Image | None:
        """The member's thumbnail, when one was asked for."""
        return open_png(self.thumbnail_png) if self.thumbnail_png else None

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)

    def _repr_png_(self) -> bytes | None:
        """The thumbnail, when one was asked for, for notebooks."""
        return self.thumbnail_png or None


@dataclass(frozen=True)
class EmbeddingMap:
    """A 2-D map of a set: ``xy`` float32 (N, 2), ``classes`` int64 (N,), aligned with ``ids``.

    ``projected`` counts every member projected (more than N when a sample was asked
    for); ``thumbnails_png`` holds one PNG per point when thumbnails were asked for.
    """

    ids: list[str]
    xy: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int64]
    labels: list[str]
    method: str
    projected: int
    thumbnails_png: list[bytes] = field(default_factory=list)

    def thumbnails(self) -> list[PILImage.Image]:
        """The points' thumbnails as PIL images (empty when none were asked for)."""
        return [open_png(data) for data in self.thumbnails_png if data]

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)


def as_tuple(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


__all__ = [
    "ActivatingPatch",
    "EmbeddingMap",
    "ImageSet",
    "IndexOutcome",
    "IndexResult",
    "IndexStatus",
    "Neighbour",
    "open_png",
]
