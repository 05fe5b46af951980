"""Image-set calls: arguments to request messages, replies to ``camserve.sets`` results.

Shared by the blocking and the asyncio client. ``IndexRun`` drives one ``index`` call:
it reads and encodes the images lazily (one message per ``chunk`` images), records
the images it could not read as failed without sending them, turns the server's
progress replies into a progress callback and an ``IndexResult``, and, when a stream
ends with UNAVAILABLE, opens the next one with the images not answered yet.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Final

import grpc
import numpy as np

from camserve._inputs import ImageInput, encode_image
from camserve._progress import ProgressBar
from camserve._resume import ResumePolicy, SentLedger
from camserve.errors import InvalidArgumentError, from_rpc_error
from camserve.results import from_fields
from camserve.sets import (
    ActivatingPatch,
    EmbeddingMap,
    ImageSet,
    IndexOutcome,
    IndexResult,
    IndexStatus,
    Neighbour,
)
from camserve.v1 import imagesets_pb2 as pb

Progress = Callable[[int, int], None]
"""``progress(done, total)``: images handled so far, out of ``total`` (0 when unknown)."""

SPACES: Final = {"features": pb.NEIGHBOUR_SPACE_FEATURES, "pixels": pb.NEIGHBOUR_SPACE_PIXELS}
METHODS: Final = {"pca": pb.PROJECTION_METHOD_PCA, "tsne": pb.PROJECTION_METHOD_TSNE}
_STATUS: Final[dict[int, IndexStatus]] = {
    pb.INDEX_STATUS_INDEXED: "indexed",
    pb.INDEX_STATUS_SKIPPED: "skipped",
    pb.INDEX_STATUS_FAILED: "failed",
}
_CODES: Final = {code.value[0]: code.name for code in grpc.StatusCode}
DEFAULT_CHUNK = 8  # images per message


def _text(value: object, what: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InvalidArgumentError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgumentError(f"{what} must be an integer, got {value!r}")
    return int(value)


def image_items(
    images: Mapping[str, ImageInput] | Iterable[ImageInput],
) -> tuple[Iterator[tuple[str, ImageInput]], int]:
    """``(id, image)`` pairs and their count (0 when unknown).

    A mapping gives its own ids; in a sequence a path is named by its file name and
    anything else by its content hash (an empty id: the server hashes the bytes).
    """
    if isinstance(images, Mapping):
        for key in images:
            _text(key, "an image id")
        return iter(images.items()), len(images)
    if isinstance(images, str | os.PathLike | bytes | np.ndarray):
        raise InvalidArgumentError(
            "images must be a mapping id -> image or a list of images, not a single image"
        )

    def named(item: ImageInput) -> tuple[str, ImageInput]:
        if isinstance(item, str | os.PathLike):
            return os.path.basename(os.fspath(item)), item
        return "", item

    total = len(images) if isinstance(images, Sequence) else 0
    return (named(item) for item in images), total


def progress_callback(
    progress: bool | Progress | None, total: int
) -> tuple[Progress, Callable[[], None]]:
    """The callback for ``progress`` (True: a bar on a terminal) and what ends it."""
    if progress is True:
        bar = ProgressBar("indexing", total)
        return bar, bar.close
    if callable(progress):
        return progress, lambda: None
    return (lambda done, total: None), lambda: None


def image_set(info: pb.ImageSetInfo) -> ImageSet:
    return from_fields(ImageSet, info, layers=tuple(info.layers))


class IndexRun:
    """One ``index`` call: request streams out, progress replies in, resumed when cut.

    The server answers the images of a stream in the order they were sent, one
    outcome each, so the first ``acknowledged`` images are done and a stream cut with
    UNAVAILABLE is followed by one that starts at the first unanswered image. Counts
    and progress add up over the streams: each image is counted once, by its outcome.
    """

    def __init__(
        self,
        name: str,
        images: Mapping[str, ImageInput] | Iterable[ImageInput],
        *,
        model: str | None,
        layers: Sequence[str] | None,
        embedding_layer: str | None,
        progress: bool | Progress | None,
        chunk: int = DEFAULT_CHUNK,
        policy: ResumePolicy | None = None,
    ) -> None:
        self.header = pb.IndexImagesRequest(
            set=_text(name, "set"),
            model=_text(model, "model", required=False),
            layers=[
                _text(layer, "a layer")
                for layer in ([layers] if isinstance(layers, str) else layers or [])
            ],
            embedding_layer=_text(embedding_layer, "embedding_layer", required=False),
        )
        if chunk < 1:
            raise InvalidArgumentError(f"chunk must be at least 1, got {chunk}")
        self.items, self.total = image_items(images)
        self.chunk = chunk
        self.policy = policy or ResumePolicy()
        self.outcomes: list[IndexOutcome] = []
        self.local_failures = 0
        self.info: ImageSet | None = None
        self.counts: dict[IndexStatus, int] = {"indexed": 0, "skipped": 0, "failed": 0}
        self.resumed = 0
        self.report, self.close_progress = progress_callback(progress, self.total)
        self.ledger: SentLedger[tuple[str, bytes]] = SentLedger(self._encoded())
        self._lock = threading.Lock()
        self._stream = 0
        self._answered_before = 0  # acknowledged when the current stream opened
        self._idle = 0  # streams in a row cut before any answer
        self._timed = False
        self._ends_at: float | None = None

    def requests(self) -> Iterator[pb.IndexImagesRequest]:
        """The messages of a new stream: the header, then every image not answered yet
        (first those an earlier stream sent, then new ones), ``chunk`` to a message."""
        self._stream += 1
        self._answered_before = self.ledger.acknowledged
        return self._messages(self._stream, self._answered_before)

    def _messages(self, stream: int, position: int) -> Iterator[pb.IndexImagesRequest]:
        message = pb.IndexImagesRequest()
        message.CopyFrom(self.header)
        while stream == self._stream:  # a stream already cut takes no more images
            item = self.ledger.get(position)
            if item is None:
                break
            position += 1
            message.images.add(id=item[0], encoded=item[1])
            if len(message.images) >= self.chunk:
                yield message
                message = pb.IndexImagesRequest()
        if stream == self._stream and (message.images or message.set):
            yield message

    def _encoded(self) -> Iterator[tuple[str, bytes]]:
        """``(id, encoded)`` of each image, read once; an unreadable one fails here."""
        for member_id, image in self.items:
            try:
                encoded = encode_image(image)
            except InvalidArgumentError as exc:
                with self._lock:
                    self.outcomes.append(
                        IndexOutcome(member_id, "failed", exc.details, "INVALID_ARGUMENT")
                    )
                    self.local_failures += 1
                self._report()
                continue
            yield member_id, encoded

    def on_reply(self, reply: pb.IndexImagesResponse) -> None:
        with self._lock:
            for outcome in reply.outcomes:
                status = _STATUS.get(outcome.status, "failed")
                self.counts[status] += 1
                self.outcomes.append(
                    IndexOutcome(
                        id=outcome.id,
                        status=status,
                        reason=outcome.reason,
                        code=_CODES.get(outcome.code, "") if outcome.code else "",
                        existing_id=outcome.existing_id,
                    )
                )
            self.ledger.acknowledge(len(reply.outcomes))
            if reply.HasField("set"):
                self.info = image_set(reply.set)
        self._report()

    def _report(self) -> None:
        self.report(self.ledger.acknowledged + self.local_failures, self.total)

    def resume_or_raise(self, error: grpc.RpcError) -> float:
        """Seconds to wait before the next stream after ``error``; when the call is not
        to be resumed (see ``resume_delay``), the progress ends and ``error`` is raised
        as the SDK's own error."""
        delay = self.resume_delay(error)
        if delay is None:
            self.close_progress()
            raise from_rpc_error(error) from None
        return delay

    def resume_delay(self, error: grpc.RpcError) -> float | None:
        """Seconds to wait before the next stream after ``error``; None: give up.

        Only UNAVAILABLE is resumed; at most ``policy.max_idle`` streams in a row that
        were cut before any image was answered, and never past the call's deadline.
        """
        code = error.code() if callable(getattr(error, "code", None)) else None
        if code != grpc.StatusCode.UNAVAILABLE:
            return None
        answered = self.ledger.acknowledged > self._answered_before
        self._idle = 0 if answered else self._idle + 1
        if self._idle > self.policy.max_idle:
            return None
        delay = self.policy.delay(self._idle)
        if self._ends_at is not None and time.monotonic() + delay >= self._ends_at:
            return None
        self.resumed += 1
        return delay

    def finish(self) -> IndexResult:
        self.close_progress()
        if self.info is None:
            raise InvalidArgumentError("the server ended the index stream without a summary")
        return IndexResult(
            set=self.info,
            indexed=self.counts["indexed"],
            skipped=self.counts["skipped"],
            failed=self.counts["failed"] + self.local_failures,
            outcomes=self.outcomes,
            resumed=self.resumed,
        )

    def deadline(self, default: float | None) -> float | None:
        """A whole-call deadline: the default per call, plus a second per known image."""
        if default is None:
            return None
        return default + float(self.total)

    def time_left(self, timeout: float | None, default: float | None) -> float | None:
        """Seconds left of the whole call (``timeout``, else ``deadline(default)``), across
        its streams; None: no deadline."""
        if not self._timed:
            self._timed = True
            total = timeout if timeout is not None else self.deadline(default)
            self._ends_at = None if total is None else time.monotonic() + total
        if self._ends_at is None:
            return None
        return max(0.001, self._ends_at - time.monotonic())


def top_request(name: str, layer: str | None, channel: int, k: int) -> pb.TopActivatingRequest:
    channel, k = _int(channel, "channel"), _int(k, "k")
    if channel < 0:
        raise InvalidArgumentError(f"channel must be >= 0, got {channel}")
    if k < 1:
        raise InvalidArgumentError(f"k must be >= 1, got {k}")
    return pb.TopActivatingRequest(
        set=_text(name, "set"), layer=_text(layer, "layer", required=False), channel=channel, k=k
    )


def top_items(reply: pb.TopActivatingResponse) -> list[ActivatingPatch]:
    return [
        ActivatingPatch(
            id=item.id,
            activation=float(item.activation),
            position=(int(item.row), int(item.col)),
            box=(item.box[0], item.box[1], item.box[2], item.box[3]),
            patch_png=item.patch,
            predicted=int(item.predicted),
            label=item.label,
            layer=reply.layer,
            channel=int(reply.channel),
        )
        for item in reply.items
    ]


def neighbours_request(
    name: str,
    image: ImageInput | None,
    member_id: str | None,
    k: int,
    space: str,
    thumbnail_size: int,
) -> pb.NearestNeighboursRequest:
    if (image is None) == (member_id is None):
        raise InvalidArgumentError("give exactly one of image= and id=")
    if space not in SPACES:
        raise InvalidArgumentError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    k, thumbnail_size = _int(k, "k"), _int(thumbnail_size, "thumbnail_size")
    if k < 1:
        raise InvalidArgumentError(f"k must be >= 1, got {k}")
    request = pb.NearestNeighboursRequest(
        set=_text(name, "set"), k=k, space=SPACES[space], thumbnail_size=thumbnail_size
    )
    if member_id is not None:
        request.id = _text(member_id, "id")
    else:
        assert image is not None
        request.image = encode_image(image)
    return request


def neighbour_items(reply: pb.NearestNeighboursResponse) -> list[Neighbour]:
    return [
        Neighbour(
            id=n.id,
            distance=float(n.distance),
            predicted=int(n.predicted),
            label=n.label,
            thumbnail_png=n.thumbnail,
        )
        for n in reply.neighbours
    ]


def map_request(
    name: str, method: str, seed: int, max_points: int, thumbnail_size: int
) -> pb.EmbeddingMapRequest:
    if method not in METHODS:
        raise InvalidArgumentError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return pb.EmbeddingMapRequest(
        set=_text(name, "set"),
        method=METHODS[method],
        seed=_int(seed, "seed"),
        max_points=_int(max_points, "max_points"),
        thumbnail_size=_int(thumbnail_size, "thumbnail_size"),
    )


def embedding_map(reply: pb.EmbeddingMapResponse) -> EmbeddingMap:
    points = reply.points
    xy = np.array([(p.x, p.y) for p in points], dtype=np.float32).reshape(len(points), 2)
    method = {v: k for k, v in METHODS.items()}.get(reply.method, "pca")
    thumbnails = [p.thumbnail for p in points] if any(p.thumbnail for p in points) else []
    return EmbeddingMap(
        ids=[p.id for p in points],
        xy=xy,
        classes=np.array([p.predicted for p in points], dtype=np.int64),
        labels=[p.label for p in points],
        method=method,
        projected=int(reply.projected),
        thumbnails_png=thumbnails,
    )


def image_sets(reply: pb.ListSetsResponse) -> list[ImageSet]:
    return [image_set(info) for info in reply.sets]


def describe_request(name: str) -> pb.DescribeSetRequest:
    return pb.DescribeSetRequest(set=_text(name, "set"))


def delete_request(name: str) -> pb.DeleteSetRequest:
    return pb.DeleteSetRequest(set=_text(name, "set"))


def bytes_freed(reply: pb.DeleteSetResponse) -> int:
    return int(reply.bytes_freed)


__all__ = [
    "IndexRun",
    "Progress",
    "bytes_freed",
    "delete_request",
    "describe_request",
    "embedding_map",
    "image_items",
    "image_set",
    "image_sets",
    "map_request",
    "neighbour_items",
    "neighbours_request",
    "top_items",
    "top_request",
]
