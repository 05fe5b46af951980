"""The image-set service's domain logic, free of protobuf: validate, decode off the event
loop, run indexing batches on the device workers one step at a time, store, and answer.

``servicer.py`` converts protobuf to these objects and back, nothing else. The engine
(``indexer``, ``queries``, ``receptive_field``, ``projection``) does the arithmetic;
this module decides what runs where: decoding and store I/O in a thread pool, model
passes on a device worker as ``BACKGROUND`` steps (explanation batches get the device
between two indexing batches), projections in the thread pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
import torch

from ..config import Settings
from ..errors import CamserveError, FailedPrecondition, InvalidArgument, NotFound, choices
from ..models import ExplainableModel
from ..models.loading import LoadedModel
from ..runtime.cache import image_key
from ..runtime.device_slot import Priority
from ..runtime.metrics import Metrics
from ..runtime.workers import DeviceWorker
from . import prepare
from .indexer import INPUT_SUFFIX, IndexedImage, index_batch, penultimate_layer
from .projection import embedding_map
from .queries import Neighbour, nearest, top_activating
from .receptive_field import ReceptiveField, receptive_field
from .records import MAX_LAYERS, MemberRecord, SetInfo, check_member_id, check_set_name
from .store import SetStore, check_layer, open_set_store

T = TypeVar("T")

Space = Literal["features", "pixels"]
Projection = Literal["pca", "tsne"]
SPACES: tuple[Space, ...] = ("features", "pixels")
PROJECTIONS: tuple[Projection, ...] = ("pca", "tsne")
MAX_TOP_K = 256
DEFAULT_TOP_K = 9
MAX_NEIGHBOURS = 1000
DEFAULT_NEIGHBOURS = 10
MAX_IMAGES_PER_CALL_BATCH = 64


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


@dataclass(frozen=True)
class PatchItem:
    """A member that activates a channel, and the PNG patch its maximal unit sees."""

    id: str
    activation: float
    position: tuple[int, int]
    box: tuple[int, int, int, int]
    patch: bytes
    predicted: int
    label: str


@dataclass(frozen=True)
class TopActivatingAnswer:
    layer: str
    channel: int
    channels: int
    receptive_field: tuple[int, int]
    items: list[PatchItem]


@dataclass(frozen=True)
class NeighbourItem:
    id: str
    distance: float
    predicted: int
    label: str
    thumbnail: bytes = b""


@dataclass(frozen=True)
class NeighboursAnswer:
    space: Space
    neighbours: list[NeighbourItem]
    query_predicted: int
    query_label: str


@dataclass(frozen=True)
class MapPointItem:
    id: str
    xy: tuple[float, float]
    predicted: int
    label: str
    thumbnail: bytes = b""


@dataclass(frozen=True)
class MapAnswer:
    method: Projection
    points: list[MapPointItem]
    projected: int


@dataclass
class _Counts:
    received: int = 0
    indexed: int = 0
    skipped: int = 0
    failed: int = 0
    seen: dict[str, str] = field(default_factory=dict)  # hash -> id, within this call


def _in_range(name: str, value: int, default: int, high: int) -> int:
    if value == 0:
        return default
    if not 1 <= value <= high:
        raise InvalidArgument(f"{name} must be in [1, {high}] (0 = {default}), got {value}")
    return value


def _thumbnail_side(value: int) -> int:
    if not 0 <= value <= prepare.MAX_THUMBNAIL_SIDE:
        raise InvalidArgument(
            f"thumbnail_size must be in [0, {prepare.MAX_THUMBNAIL_SIDE}] (0 = none), got {value}"
        )
    return value


class ImageSetService:
    """Named image sets over one store, indexed on the server's device workers."""

    def __init__(
        self,
        settings: Settings,
        models: dict[str, LoadedModel],
        pick_worker: Callable[[], DeviceWorker],
        metrics: Metrics,
        store: SetStore | None = None,
    ) -> None:
        self.settings = settings
        self.models = models
        self.pick_worker = pick_worker
        self.metrics = metrics
        self.store: SetStore = store or open_set_store(
            settings.redis_url, max_bytes=settings.max_set_bytes
        )
        self.batch_size = max(1, min(settings.max_batch_size, MAX_IMAGES_PER_CALL_BATCH))
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, settings.decode_threads), thread_name_prefix="imagesets"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    async def _off_loop(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _on_device(
        self, fn: Callable[[dict[str, ExplainableModel]], T], priority: Priority
    ) -> T:
        return await self.pick_worker().run_step(fn, priority=priority)

    # -- models and sets --------------------------------------------------------------

    def _model(self, name: str) -> LoadedModel:
        if not name:
            raise InvalidArgument(
                f"a new image set needs a model; served models: {choices(self.models)}"
            )
        try:
            loaded = self.models[name]
        except KeyError:
            raise NotFound(
                f"unknown model {name!r}; served models: {choices(self.models)}"
            ) from None
        if not loaded.primary.layer_access:
            raise FailedPrecondition(
                f"model {name!r} is compiled: its layers cannot be read, so it cannot index a set"
            )
        return loaded

    def _set_model(self, info: SetInfo) -> LoadedModel:
        try:
            return self.models[info.model]
        except KeyError:
            raise FailedPrecondition(
                f"image set {info.name!r} was indexed with model {info.model!r}, "
                f"which this server does not serve (served: {choices(self.models)})"
            ) from None

    def _layers(self, model: ExplainableModel, layers: Sequence[str]) -> tuple[str, ...]:
        chosen = [model.resolve_layer(layer) for layer in layers] or [model.default_layer]
        spatial = model.structure.spatial_layers()
        for layer in chosen:
            if layer not in spatial:
                raise InvalidArgument(
                    f"layer {layer!r} of model {model.name!r} has no spatial map; "
                    f"layers with maps: {choices(spatial)}"
                )
        unique = tuple(dict.fromkeys(chosen))
        if len(unique) > MAX_LAYERS:
            raise InvalidArgument(f"at most {MAX_LAYERS} layers per set, got {len(unique)}")
        return unique

    def _embedding_layer(self, model: ExplainableModel, layer: str) -> str:
        """The embedding layer: a layer's output, ``<layer>:input``, or the penultimate one."""
        if not layer:
            return penultimate_layer(model)
        model.resolve_layer(layer.removesuffix(INPUT_SUFFIX))
        return layer

    async def _open_set(self, first: IndexChunk) -> SetInfo:
        """The set named by the first message, created when new; checked against the request."""
        name = check_set_name(first.set)
        existing = await self._off_loop(self._get_or_none, name)
        if existing is not None and not first.model and not first.layers:
            self._set_model(existing)
            return existing
        loaded = self._model(first.model or (existing.model if existing else ""))
        model = loaded.primary
        info = SetInfo(
            name=name,
            model=loaded.name,
            layers=self._layers(model, first.layers),
            embedding_layer=self._embedding_layer(model, first.embedding_layer),
            size=0,
            bytes_used=0,
            created=time.time(),
            max_images=self.settings.max_set_images,
            max_bytes=self.settings.max_set_bytes,
        )
        await self._off_loop(self.store.create, info)
        return await self._off_loop(self.store.get, name)

    def _get_or_none(self, name: str) -> SetInfo | None:
        try:
            return self.store.get(name)
        except NotFound:
            return None

    async def describe(self, name: str) -> SetInfo:
        return await self._off_loop(self.store.get, check_set_name(name))

    async def list_sets(self) -> list[SetInfo]:
        return await self._off_loop(self.store.list)

    async def delete(self, name: str) -> tuple[SetInfo, int]:
        """Delete the set; its description before deletion and the bytes freed."""
        info = await self.describe(name)
        freed = await self._off_loop(self.store.delete, info.name)
        return info, freed

    # -- indexing ---------------------------------------------------------------------

    async def index(self, chunks: AsyncIterator[IndexChunk]) -> AsyncIterator[IndexProgress]:
        """Index a stream of images into the set its first message names.

        Images are taken as they arrive, up to one batch at a time: a batch is never
        held back waiting for more images, so a caller that waits for progress
        before sending more is answered. Each image's fate is reported; a failure
        of the store (Redis gone) ends the call with its status, and every record
        written before it stays written.
        """
        first = await anext(chunks, None)
        if first is None:
            raise InvalidArgument("the stream is empty: the first message must name the set")
        info = await self._open_set(first)
        loaded = self._set_model(info)
        queue: asyncio.Queue[IncomingImage | None] = asyncio.Queue(maxsize=4 * self.batch_size)
        counts = _Counts()

        async def read() -> None:
            for image in first.images:
                await queue.put(image)
            async for chunk in chunks:
                self._check_followup(chunk, info)
                for image in chunk.images:
                    await queue.put(image)
            await queue.put(None)

        reader = asyncio.create_task(read())
        try:
            finished = False
            while not finished:
                batch: list[IncomingImage] = []
                item = await self._next(queue, reader)
                while item is not None:
                    batch.append(item)
                    if len(batch) >= self.batch_size or queue.empty():
                        break
                    item = queue.get_nowait()
                finished = item is None
                if batch:
                    counts.received += len(batch)
                    outcomes = await self._index_batch(info, loaded, batch, counts)
                    yield IndexProgress(
                        outcomes, counts.received, counts.indexed, counts.skipped, counts.failed
                    )
            await reader
            final = await self._off_loop(self.store.get, info.name)
            yield IndexProgress(
                [],
                counts.received,
                counts.indexed,
                counts.skipped,
                counts.failed,
                done=True,
                info=final,
            )
        finally:
            reader.cancel()

    @staticmethod
    async def _next(
        queue: asyncio.Queue[IncomingImage | None], reader: asyncio.Task[None]
    ) -> IncomingImage | None:
        """The next image; a reader that failed (a bad follow-up message) raises here."""
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        reader.result()  # raises the reader's error, if any
        return await queue.get()

    @staticmethod
    def _check_followup(chunk: IndexChunk, info: SetInfo) -> None:
        if chunk.set and chunk.set != info.name:
            raise InvalidArgument(
                f"one IndexImages call indexes one set: got {chunk.set!r} after {info.name!r}"
            )
        if chunk.model and chunk.model != info.model:
            raise InvalidArgument(
                f"image set {info.name!r} is indexed with model {info.model!r}, not {chunk.model!r}"
            )

    async def _index_batch(
        self, info: SetInfo, loaded: LoadedModel, batch: list[IncomingImage], counts: _Counts
    ) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        fresh: list[tuple[int, str, prepare.PreparedImage]] = []
        prepared = await asyncio.gather(
            *(self._off_loop(self._prepare_one, info, loaded, image) for image in batch)
        )
        for position, (_, result) in enumerate(zip(batch, prepared, strict=True)):
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
            written = await self._compute_and_store(info, loaded, fresh)
            outcomes.update(written)
        ordered = [outcomes[i] for i in range(len(batch))]
        for outcome in ordered:
            if outcome.status == "indexed":
                counts.indexed += 1
            elif outcome.status == "skipped":
                counts.skipped += 1
            else:
                counts.failed += 1
            self.metrics.set_images.labels(info.model, outcome.status).inc()
        return ordered

    def _prepare_one(
        self, info: SetInfo, loaded: LoadedModel, image: IncomingImage
    ) -> Outcome | tuple[str, str, prepare.PreparedImage | None, str | None]:
        """Id, hash, decoded image and the member already holding it; or the failure.

        The hash is looked up first: bytes the set already holds are not decoded again
        (``None`` instead of the decoded image), so a re-send costs one hash lookup.
        """
        try:
            if not image.encoded:
                raise InvalidArgument("the image bytes are empty")
            image_hash = image_key(image.encoded)
            existing = self.store.has(info.name, image_hash)
            if existing is not None:
                return check_member_id(image.id or image_hash), image_hash, None, existing
            ready = prepare.prepare(loaded, image.encoded, self.settings.max_image_pixels)
            member_id = check_member_id(image.id or ready.image_hash)
            return member_id, ready.image_hash, ready, None
        except (InvalidArgument, ValueError) as exc:
            code = exc.status if isinstance(exc, CamserveError) else "INVALID_ARGUMENT"
            return Outcome(image.id or "", "failed", code=code, reason=str(exc))

    async def _compute_and_store(
        self,
        info: SetInfo,
        loaded: LoadedModel,
        fresh: list[tuple[int, str, prepare.PreparedImage]],
    ) -> dict[int, Outcome]:
        x = torch.stack([ready.x for _, _, ready in fresh])
        layers, embedding_layer = info.layers, info.embedding_layer

        def step(models: dict[str, ExplainableModel]) -> list[IndexedImage]:
            model = models[loaded.name]
            return index_batch(model, x.to(model.device), layers, embedding_layer)

        started = time.perf_counter()
        results = await self._on_device(step, Priority.BACKGROUND)
        self.metrics.set_query_latency.labels("index_batch").observe(time.perf_counter() - started)
        records = []
        for (_, member_id, ready), result in zip(fresh, results, strict=True):
            records.append(
                MemberRecord(
                    id=member_id,
                    image_hash=ready.image_hash,
                    embedding=result.embedding,
                    maxima=result.maxima,
                    positions=result.positions,
                    predicted=result.predicted,
                    probability=result.probability,
                    image=ready.kept_png,
                    pixels=ready.pixels,
                )
            )
        return await self._off_loop(self._store_records, info.name, fresh, records)

    def _store_records(
        self,
        name: str,
        fresh: list[tuple[int, str, prepare.PreparedImage]],
        records: list[MemberRecord],
    ) -> dict[int, Outcome]:
        """Write the records; a full set fails the rest, a store failure ends the call."""
        outcomes: dict[int, Outcome] = {}
        full: CamserveError | None = None
        for (position, member_id, _), record in zip(fresh, records, strict=True):
            if full is None:
                try:
                    self.store.add(name, [record])
                    outcomes[position] = Outcome(member_id, "indexed")
                    continue
                except CamserveError as exc:
                    if exc.status != "RESOURCE_EXHAUSTED":
                        raise
                    full = exc
            outcomes[position] = Outcome(member_id, "failed", code=full.status, reason=str(full))
        return outcomes

    # -- queries ----------------------------------------------------------------------

    def _label(self, loaded: LoadedModel | None, predicted: int) -> str:
        labels = loaded.labels if loaded is not None else None
        return labels[predicted] if labels and 0 <= predicted < len(labels) else ""

    def _channels(self, loaded: LoadedModel, layer: str) -> int:
        shape = loaded.primary.structure.layers[layer].shape
        return int(shape[1]) if len(shape) > 1 else 0

    async def top_activating(
        self, name: str, layer: str, channel: int, k: int
    ) -> TopActivatingAnswer:
        """The ``k`` members whose maximum of ``channel`` is highest, with their patches."""
        started = time.perf_counter()
        info = await self.describe(name)
        layer = check_layer(info, layer or info.layers[0])
        loaded = self._set_model(info)
        channels = self._channels(loaded, layer)
        if not 0 <= channel < channels:
            raise InvalidArgument(
                f"channel must be in [0, {channels}) for layer {layer!r}, got {channel}"
            )
        k = _in_range("k", k, DEFAULT_TOP_K, MAX_TOP_K)
        field_ = await self._on_device(
            lambda models: receptive_field(models[loaded.name], layer), Priority.LIGHT
        )
        items = await self._off_loop(self._patches, info, loaded, layer, channel, k, field_)
        self.metrics.set_query_latency.labels("top_activating").observe(
            time.perf_counter() - started
        )
        return TopActivatingAnswer(
            layer=layer,
            channel=channel,
            channels=channels,
            receptive_field=(int(field_.size[0]), int(field_.size[1])),
            items=items,
        )

    def _patches(
        self,
        info: SetInfo,
        loaded: LoadedModel,
        layer: str,
        channel: int,
        k: int,
        field_: ReceptiveField,
    ) -> list[PatchItem]:
        tops = top_activating(self.store, info.name, layer, channel, k, field=field_)
        labels = self.store.predictions(info.name)
        images = self.store.images(info.name, [top.id for top in tops])  # one read for all k
        items = []
        for top, image in zip(tops, images, strict=True):
            box = tuple(int(v) for v in top.box)
            predicted = labels.of(info.name, top.id)
            items.append(
                PatchItem(
                    id=top.id,
                    activation=float(top.activation),
                    position=(int(top.position[0]), int(top.position[1])),
                    box=(box[0], box[1], box[2], box[3]),
                    patch=prepare.cut_patch(image, (box[0], box[1], box[2], box[3])),
                    predicted=predicted,
                    label=self._label(loaded, predicted),
                )
            )
        return items

    async def neighbours(
        self,
        name: str,
        *,
        image: bytes | None = None,
        member_id: str | None = None,
        k: int = 0,
        space: str = "features",
        thumbnail_size: int = 0,
    ) -> NeighboursAnswer:
        """The ``k`` members nearest a query image or member, in feature or pixel space."""
        started = time.perf_counter()
        if space not in SPACES:
            raise InvalidArgument(f"space must be one of {', '.join(SPACES)}, got {space!r}")
        if (image is None) == (member_id is None):
            raise InvalidArgument("give exactly one query: an image or the id of a member")
        k = _in_range("k", k, DEFAULT_NEIGHBOURS, MAX_NEIGHBOURS)
        side = _thumbnail_side(thumbnail_size)
        info = await self.describe(name)
        loaded = self._set_model(info)
        query: np.ndarray | str
        if member_id is not None:
            labels = await self._off_loop(self.store.predictions, info.name)
            query, predicted = member_id, labels.of(info.name, member_id)
        else:
            assert image is not None
            vector, pixels, predicted = await self._embed_query(info, loaded, image)
            query = vector if space == "features" else pixels
        found = await self._off_loop(nearest, self.store, info.name, query, k, space)
        items = await self._off_loop(self._neighbour_items, info, loaded, found, side)
        self.metrics.set_query_latency.labels(f"neighbours_{space}").observe(
            time.perf_counter() - started
        )
        return NeighboursAnswer(
            space="pixels" if space == "pixels" else "features",
            neighbours=items,
            query_predicted=predicted,
            query_label=self._label(loaded, predicted),
        )

    async def _embed_query(
        self, info: SetInfo, loaded: LoadedModel, image: bytes
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """A query image's embedding, pixel thumbnail and predicted class."""
        if not image:
            raise InvalidArgument("the query image bytes are empty")
        ready = await self._off_loop(prepare.prepare, loaded, image, self.settings.max_image_pixels)
        x = ready.x[None]
        embedding_layer = info.embedding_layer

        def step(models: dict[str, ExplainableModel]) -> tuple[np.ndarray, int]:
            model = models[loaded.name]
            result = index_batch(model, x.to(model.device), (), embedding_layer)[0]
            return result.embedding, result.predicted

        vector, predicted = await self._on_device(step, Priority.LIGHT)
        return vector, ready.pixels, predicted

    def _neighbour_items(
        self, info: SetInfo, loaded: LoadedModel, found: Sequence[Neighbour], side: int
    ) -> list[NeighbourItem]:
        labels = self.store.predictions(info.name)
        ids = [neighbour.id for neighbour in found]
        images = self.store.images(info.name, ids) if side else [b""] * len(ids)  # one read
        items = []
        for neighbour, image in zip(found, images, strict=True):
            predicted = labels.of(info.name, neighbour.id)
            items.append(
                NeighbourItem(
                    id=neighbour.id,
                    distance=neighbour.distance,
                    predicted=predicted,
                    label=self._label(loaded, predicted),
                    thumbnail=prepare.thumbnail(image, side) if side else b"",
                )
            )
        return items

    async def embedding_map(
        self,
        name: str,
        *,
        method: str = "pca",
        seed: int = 0,
        max_points: int = 0,
        thumbnail_size: int = 0,
    ) -> MapAnswer:
        """The set's embeddings projected to 2-D, each point with its predicted class."""
        started = time.perf_counter()
        if method not in PROJECTIONS:
            raise InvalidArgument(f"method must be one of {', '.join(PROJECTIONS)}, got {method!r}")
        if max_points < 0:
            raise InvalidArgument(f"max_points must be >= 0 (0 = every member), got {max_points}")
        side = _thumbnail_side(thumbnail_size)
        info = await self.describe(name)
        loaded = self._set_model(info)
        answer = await self._off_loop(self._project, info, loaded, method, seed, max_points, side)
        self.metrics.set_query_latency.labels(f"map_{method}").observe(
            time.perf_counter() - started
        )
        return answer

    def _project(
        self,
        info: SetInfo,
        loaded: LoadedModel,
        method: Projection,
        seed: int,
        max_points: int,
        side: int,
    ) -> MapAnswer:
        ids, matrix = self.store.matrix(info.name)
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
        labels = self.store.predictions(info.name)
        kept = [i for i in chosen.tolist() if ids[i] in labels.row]
        images = self.store.images(info.name, [ids[i] for i in kept]) if side else []
        points = []
        for n, i in enumerate(kept):
            predicted = int(labels.predicted[labels.row[ids[i]]])
            points.append(
                MapPointItem(
                    id=ids[i],
                    xy=(float(xy[i, 0]), float(xy[i, 1])),
                    predicted=predicted,
                    label=self._label(loaded, predicted),
                    thumbnail=prepare.thumbnail(images[n], side) if side else b"",
                )
            )
        return MapAnswer(method=method, points=points, projected=len(ids))


__all__ = [
    "ImageSetService",
    "IncomingImage",
    "IndexChunk",
    "IndexProgress",
    "MapAnswer",
    "NeighboursAnswer",
    "Outcome",
    "TopActivatingAnswer",
]
