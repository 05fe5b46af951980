"""The service's domain logic, free of protobuf: validate, decode, look up the cache,
queue for a device worker, and shape the answer.

``servicer.py`` converts protobuf to these objects and back, nothing else.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .config import Settings
from .errors import InvalidArgument, NotFound, choices
from .methods import METHODS, CachedLayer, Method, TargetRequest, get_method
from .methods.activations import conv_weights
from .methods.base import validate_targets
from .methods.options import parse_options
from .models.imaging import (
    Placement,
    convert_heatmap,
    decode_image,
    image_size,
    place_heatmap,
    validate_tensor,
)
from .models.loading import LoadedModel
from .reply_size import (
    DEFAULT_OUTPUT_SIDE,
    check_reply_fits,
    default_output_size,
    reply_bytes,
    unique_classes,
)
from .runtime.batcher import Batcher, GroupKey, WorkItem
from .runtime.cache import CachedActivation, TieredCache, cache_key, image_key
from .runtime.intra_op import HEAD_ONLY_THREADS, intra_op_threads, team_size
from .runtime.metrics import Metrics
from .runtime.precision import precision_name
from .runtime.workers import ItemResult

MAX_TARGETS = 64
HEATMAP_DTYPES = ("float32", "float16", "uint8")


NO_IMAGE = "the request carries no image: give encoded bytes or a tensor"


@dataclass
class ImageSource:
    """Encoded image bytes, or a preprocessed float32 tensor ``(3, H, W)``."""

    encoded: bytes | None = None
    tensor: np.ndarray | None = None

    def content_key(self, loaded: LoadedModel, missing: str = NO_IMAGE) -> tuple[str, str]:
        """``(preprocessing, sha256)`` naming what the model sees: the preprocessing digest
        and a hash of the bytes, or ``"tensor"`` and a hash of the tensor and its shape."""
        if self.encoded is not None:
            return loaded.preprocess.digest(), image_key(self.encoded)
        if self.tensor is not None:
            array = np.ascontiguousarray(self.tensor)
            shape = str((array.dtype.str, array.shape)).encode()
            # The bytes as a flat uint8 view: memoryview.cast refuses a shape with a zero,
            # and an empty tensor must reach the shape check (INVALID_ARGUMENT).
            return "tensor", image_key(array.reshape(-1).view(np.uint8).data, shape)
        raise InvalidArgument(missing)

    def model_input(
        self, loaded: LoadedModel, max_pixels: int, missing: str = NO_IMAGE
    ) -> tuple[torch.Tensor, Placement | None]:
        """The model's input ``(3, H, W)``: decoded and preprocessed (with where it sits on
        the picture), or the caller's tensor, validated."""
        if self.encoded is not None:
            return loaded.preprocess(decode_image(self.encoded, max_pixels=max_pixels))
        if self.tensor is not None:
            return validate_tensor(self.tensor), None
        raise InvalidArgument(missing)


@dataclass
class ExplainQuery:
    """One explanation request, as the domain sees it."""

    model: str
    method: str
    source: ImageSource
    classes: tuple[int, ...] = ()
    top_k: int = 0
    layer: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    out_size: tuple[int, int] | None = None
    dtype: str = "float32"
    return_raw: bool = False
    deadline: float | None = None


@dataclass
class ClassScore:
    index: int
    label: str
    probability: float
    logit: float


@dataclass
class ExplainAnswer:
    """One explanation: a heatmap per target at the requested size and dtype, and context."""

    model: str
    method: str
    variant: str
    layer: str
    targets: list[int]
    labels: list[str]
    heatmaps: list[np.ndarray]
    empty: list[bool]
    raw: list[np.ndarray] | None
    top_classes: list[ClassScore]
    cache_hit: bool
    timings: dict[str, float]
    metrics: dict[str, float]
    image_size: tuple[int, int]
    values: np.ndarray | None = None
    channels: list[int] | None = None


@dataclass
class _Prepared:
    x: torch.Tensor
    placement: Placement | None
    decode_s: float


class ExplainService:
    """Serves every model of a config through one batcher, one cache and the device workers."""

    def __init__(
        self,
        settings: Settings,
        models: dict[str, LoadedModel],
        batcher: Batcher,
        cache: TieredCache,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.models = models
        self.batcher = batcher
        self.cache = cache
        self.metrics = metrics
        self._precision = precision_name(settings.precision)
        self._threads = team_size()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, settings.decode_threads), thread_name_prefix="decode"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def model(self, name: str) -> LoadedModel:
        """The named model, or NOT_FOUND naming the served ones."""
        if not name and len(self.models) == 1:
            return next(iter(self.models.values()))
        try:
            return self.models[name]
        except KeyError:
            raise NotFound(
                f"unknown model {name!r}; served models: {choices(self.models)}"
            ) from None

    async def explain(self, query: ExplainQuery) -> ExplainAnswer:
        """Validate, consult the cache, decode off the event loop if needed, queue, answer.

        A cache hit for a method that needs no pixels reads only the image header.
        """
        started = time.perf_counter()
        loaded = self.model(query.model)
        method = get_method(query.method)
        if query.method not in loaded.methods:
            raise InvalidArgument(
                f"method {query.method!r} is not available for model {loaded.name!r}; "
                f"its methods: {choices(loaded.methods)}"
            )
        options = parse_options(method.id, method.options, query.options)
        classes = unique_classes(tuple(query.classes))
        if len(classes) > MAX_TARGETS or query.top_k > MAX_TARGETS:
            raise InvalidArgument(f"at most {MAX_TARGETS} targets per request")
        target = TargetRequest(classes=classes, top_k=query.top_k)
        validate_targets([target], loaded.primary.num_classes)
        if query.dtype not in HEATMAP_DTYPES:
            raise InvalidArgument(f"heatmap dtype must be one of {', '.join(HEATMAP_DTYPES)}")
        if method.uses_targets:
            self._check_reply_size(loaded, method, query, len(classes) or query.top_k or 1)
        layer = None
        if method.uses_layer and (query.layer or not method.own_default_layer):
            layer = loaded.primary.resolve_layer(query.layer)

        loop = asyncio.get_running_loop()
        with self.batcher.arriving():
            cached: CachedLayer | None = None
            key: str | None = None
            prepared: _Prepared | None = None
            if method.caches_layer and layer is not None:
                key, cached, prepared = self._lookup_in_memory(loaded, method, layer, query.source)
                if prepared is None:
                    key, cached, prepared = await loop.run_in_executor(
                        self._pool, self._lookup, loaded, method, layer, query.source, key
                    )
            if prepared is None:
                prepared = await loop.run_in_executor(
                    self._pool, self._prepare, loaded, query.source
                )
            group = GroupKey(
                model=loaded.name,
                method=method.id,
                layer=layer,
                options=tuple(sorted((k, _hashable(v)) for k, v in options.items())),
                shape=tuple(prepared.x.shape),
            )
            future: asyncio.Future[ItemResult] = loop.create_future()
            self.batcher.submit(
                WorkItem(
                    group=group,
                    x=prepared.x,
                    target=target,
                    future=future,
                    cached=cached,
                    cache_key=key,
                    want_raw=query.return_raw,
                    deadline=query.deadline,
                )
            )
        try:
            result = await future
        except asyncio.CancelledError:
            future.cancel()
            raise
        if _small_answer(query, prepared, result):
            with intra_op_threads(HEAD_ONLY_THREADS, after=self._threads):  # a few small ops
                answer = self._shape_answer(loaded, query, prepared, result)
        else:
            answer = await loop.run_in_executor(
                self._pool, self._shape_answer, loaded, query, prepared, result
            )
        answer.timings = {
            "decode_ms": prepared.decode_s * 1e3,
            "queue_ms": result.queue_s * 1e3,
            "compute_ms": result.compute_s * 1e3,
            "total_ms": (time.perf_counter() - started) * 1e3,
        }
        return answer

    def _check_reply_size(
        self, loaded: LoadedModel, method: Method, query: ExplainQuery, targets: int
    ) -> None:
        """Refuse, before any work, a request whose heatmaps cannot fit in one reply.

        An encoded picture's maps default to its size, capped: its header is read only
        when the cap itself could be too large. A tensor's maps default to the tensor's
        size, as do its raw attributions."""
        limit = self.settings.max_message_bytes
        tensor = query.source.tensor if query.source.encoded is None else None
        if tensor is not None and tensor.ndim >= 2:
            picture: tuple[int, int] | None = (int(tensor.shape[-2]), int(tensor.shape[-1]))
        else:
            picture = None
        raw_input = (picture or loaded.primary.input_size) if query.return_raw else None
        raw_channels = 3 if method.family in ("gradient", "perturbation") else 1
        if query.out_size is not None:
            output = query.out_size
        elif picture is not None:
            output = picture
        else:
            largest = (DEFAULT_OUTPUT_SIDE, DEFAULT_OUTPUT_SIDE)
            if reply_bytes(targets, largest, query.dtype, raw_input, raw_channels) <= limit:
                return
            encoded = query.source.encoded
            if encoded is None:
                raise InvalidArgument(NO_IMAGE)
            picture_size = image_size(encoded, max_pixels=self.settings.max_image_pixels)
            output = default_output_size(picture_size)
        check_reply_fits(reply_bytes(targets, output, query.dtype, raw_input, raw_channels), limit)

    def filters(self, model: str, layer: str | None) -> tuple[str, np.ndarray]:
        """A convolution's weights ``(K, C, kh, kw)``; the first convolution by default."""
        loaded = self.model(model)
        if not loaded.primary.layer_access:
            raise InvalidArgument(f"model {loaded.name!r} is compiled: its filters cannot be read")
        name, weights = conv_weights(loaded.primary, layer or None)
        return name, weights.detach().float().cpu().numpy()

    def _key(self, loaded: LoadedModel, layer: str, source: ImageSource) -> str:
        """The cache key: model, weights, preprocessing, precision, layer and a hash of the
        input bytes."""
        preprocess, image_hash = source.content_key(loaded)
        return cache_key(
            loaded.name, loaded.weights_digest, preprocess, layer, image_hash, self._precision
        )

    def _lookup_in_memory(
        self, loaded: LoadedModel, method: Method, layer: str, source: ImageSource
    ) -> tuple[str | None, CachedLayer | None, _Prepared | None]:
        """The whole lookup on the event loop, when it is cheap: a small encoded image
        (hashing it takes microseconds), found in the memory tier, for a method that
        needs only its header. Otherwise ``prepared`` is None and the pool takes over
        (with the key, if the memory tier was already consulted)."""
        encoded = source.encoded
        if encoded is None or len(encoded) > SMALL_PAYLOAD_BYTES:
            return None, None, None
        key = self._key(loaded, layer, source)
        value = self.cache.memory.get(key)
        if value is None:
            return key, None, None
        prepared = self._prepare_hit(loaded, method, layer, source)
        if prepared is None:  # needs pixels: decode in the pool, the entry is still good
            return None, None, None
        return key, CachedLayer(value.activation, value.logits), prepared

    def _lookup(
        self,
        loaded: LoadedModel,
        method: Method,
        layer: str,
        source: ImageSource,
        missed_in_memory: str | None = None,
    ) -> tuple[str, CachedLayer | None, _Prepared]:
        """Key, cached activation (or None) and the prepared input, in one thread hop.

        A hit that needs no pixels reads only the image header; a miss decodes.
        ``missed_in_memory``: the key, already looked up in the memory tier (and missed).
        """
        key = missed_in_memory or self._key(loaded, layer, source)
        value, _ = self.cache.get(key, memory=missed_in_memory is None)
        if value is None:
            return key, None, self._prepare(loaded, source)
        cached = CachedLayer(value.activation, value.logits)
        prepared = self._prepare_hit(loaded, method, layer, source)
        return key, cached, prepared or self._prepare(loaded, source)

    def _prepare(self, loaded: LoadedModel, source: ImageSource) -> _Prepared:
        """Decode and preprocess (or validate a tensor): the full path of a cache miss."""
        started = time.perf_counter()
        with intra_op_threads(self._threads, after=self._threads):
            x, placement = source.model_input(loaded, self.settings.max_image_pixels)
        return _Prepared(x=x, placement=placement, decode_s=time.perf_counter() - started)

    def _prepare_hit(
        self, loaded: LoadedModel, method: Method, layer: str, source: ImageSource
    ) -> _Prepared | None:
        """For a cache hit that needs no pixels: a placeholder input, no decode.

        An encoded image's header gives its size. A tensor is not validated again: its
        key hashes its dtype, shape and bytes, so a hit means that this very tensor
        passed validation when its activation was computed.
        """
        if method.pixels_on_cache_hit:
            return None
        if method.runs_head_on_cache_hit and not loaded.primary.known_head(layer):
            return None  # no head (yet): the fallback substitutes the activation in a full forward
        started = time.perf_counter()
        if source.encoded is not None:
            size = image_size(source.encoded, max_pixels=self.settings.max_image_pixels)
            x = _placeholder(loaded.primary.input_size)  # never read: the activation is cached
            placement: Placement | None = loaded.preprocess.placement(size)
        elif source.tensor is not None:
            height, width = source.tensor.shape[-2:]
            x, placement = _placeholder((int(height), int(width))), None
        else:
            return None
        return _Prepared(x=x, placement=placement, decode_s=time.perf_counter() - started)

    def _shape_answer(
        self, loaded: LoadedModel, query: ExplainQuery, prepared: _Prepared, result: ItemResult
    ) -> ExplainAnswer:
        labels = loaded.labels
        heatmaps: list[np.ndarray] = []
        if result.heatmaps is not None and get_method(query.method).uses_targets:
            if prepared.placement is not None:
                out_size = query.out_size or default_output_size(prepared.placement.original_size)
                placed = place_heatmap(result.heatmaps, prepared.placement, out_size)
            elif query.out_size is not None:
                placed = torch.nn.functional.interpolate(
                    result.heatmaps[:, None],
                    size=query.out_size,
                    mode="bilinear",
                    align_corners=False,
                )[:, 0].clamp(0, 1)
            else:
                placed = result.heatmaps
            heatmaps = [convert_heatmap(h, query.dtype) for h in placed]
        raw = None
        if query.return_raw and result.raw is not None and get_method(query.method).uses_targets:
            raw = [r.numpy() for r in result.raw]
        probabilities = torch.softmax(result.logits, dim=0)
        k = min(max(5, len(result.targets)), probabilities.numel())
        top = probabilities.topk(k)
        top_classes = [
            ClassScore(
                index=int(i),
                label=labels[int(i)] if labels else "",
                probability=float(p),
                logit=float(result.logits[int(i)]),
            )
            for p, i in zip(top.values, top.indices, strict=True)
        ]
        image_size = (
            prepared.placement.original_size
            if prepared.placement is not None
            else (int(prepared.x.shape[-2]), int(prepared.x.shape[-1]))
        )
        values = None
        if not get_method(query.method).uses_targets and result.raw is not None:
            values = result.raw.numpy()
        return ExplainAnswer(
            model=loaded.name,
            method=query.method,
            variant=result.variant,
            layer=result.layer or "",
            targets=result.targets,
            labels=[labels[t] if labels else "" for t in result.targets],
            heatmaps=heatmaps,
            empty=result.empty,
            raw=raw,
            top_classes=top_classes,
            cache_hit=result.cache_hit,
            timings={},
            metrics=_per_target(result.metrics, result.targets),
            image_size=image_size,
            values=values,
            channels=result.channels,
        )


def _per_target(metrics: dict[str, list[float]], targets: list[int]) -> dict[str, float]:
    """One number per metric and target: ``name`` for a single target, ``name/<class>`` else."""
    if len(targets) == 1:
        return {name: values[0] for name, values in metrics.items() if values}
    return {
        f"{name}/{target}": value
        for name, values in metrics.items()
        for target, value in zip(targets, values, strict=False)
    }


# An encoded image this small is hashed on the event loop (sha256 runs at about 1 GB/s:
# at most a quarter millisecond).
SMALL_PAYLOAD_BYTES = 256 << 10


@functools.lru_cache(maxsize=16)
def _placeholder(size: tuple[int, int]) -> torch.Tensor:
    """The input of a cache hit that reads no pixels: one shared, read-only zero tensor."""
    return torch.zeros(3, *size)


INLINE_ANSWER_PIXELS = 1 << 17  # heatmap pixels in all, e.g. two 256x256 maps


def _small_answer(query: ExplainQuery, prepared: _Prepared, result: ItemResult) -> bool:
    """Whether shaping the answer is cheap enough to do on the event loop (no thread hop).

    Resizing heatmaps onto a large picture takes milliseconds and goes to the pool;
    up to ``INLINE_ANSWER_PIXELS`` pixels in all, it costs less than the hop.
    """
    if query.out_size is not None:
        height, width = query.out_size
    elif prepared.placement is not None:
        height, width = default_output_size(prepared.placement.original_size)
    else:
        height, width = int(prepared.x.shape[-2]), int(prepared.x.shape[-1])
    maps = len(result.targets) * (2 if query.return_raw else 1)
    return height * width * maps <= INLINE_ANSWER_PIXELS


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


__all__ = [
    "METHODS",
    "CachedActivation",
    "ExplainAnswer",
    "ExplainQuery",
    "ExplainService",
    "ImageSource",
]
