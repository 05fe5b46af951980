"""The service's domain logic, free of protobuf: one path for every request.

``plan`` (check once) -> the activation cache, or the decode pool -> the batcher ->
a device worker -> the answer for the RPC (``answers.py``). ``servicer.py`` converts
protobuf to queries and answers back to protobuf, nothing else.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .answers import (
    ActivationsAnswer,
    ClassScore,
    EmbedAnswer,
    ExplainAnswer,
    PreparedInput,
    activations_answer,
    embed_answer,
    explain_answer,
)
from .config import Settings
from .errors import InvalidArgument
from .methods import CachedLayer
from .methods.activations import conv_weights
from .models.loading import LoadedModel, served_model
from .plan import Limits, Plan, make_plan
from .query import ExplainQuery, ImageSource
from .runtime.activation_cache import ActivationCache
from .runtime.batcher import Batcher, GroupKey, WorkItem
from .runtime.intra_op import ThreadPolicy
from .runtime.metrics import Metrics
from .runtime.workers import ItemResult

__all__ = [
    "ActivationsAnswer",
    "ClassScore",
    "EmbedAnswer",
    "ExplainAnswer",
    "ExplainQuery",
    "ExplainService",
    "ImageSource",
]

# An encoded image this small is hashed on the event loop (sha256 runs at about 1 GB/s:
# at most a quarter millisecond).
SMALL_PAYLOAD_BYTES = 256 << 10
INLINE_ANSWER_PIXELS = 1 << 17  # heatmap pixels in all, e.g. two 256x256 maps

Found = tuple[PreparedInput, CachedLayer | None, str | None]


class ExplainService:
    """Serves every model of a config through one batcher, one cache and the device workers."""

    def __init__(
        self,
        settings: Settings,
        models: dict[str, LoadedModel],
        batcher: Batcher,
        cache: ActivationCache,
        metrics: Metrics,
        threads: ThreadPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.models = models
        self.batcher = batcher
        self.cache = cache
        self.metrics = metrics
        self.threads = threads or ThreadPolicy()
        self._limits = Limits(settings.max_message_bytes, settings.max_image_pixels)
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, settings.decode_threads), thread_name_prefix="decode"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def model(self, name: str) -> LoadedModel:
        """The named model, or NOT_FOUND naming the served ones."""
        return served_model(self.models, name)

    def plan(self, query: ExplainQuery) -> Plan:
        """The query resolved and checked once (``plan.make_plan``)."""
        return make_plan(query, self.model(query.model), self._limits)

    async def explain(self, query: ExplainQuery) -> ExplainAnswer:
        """A heatmap per target, placed on the picture. Shaping a small answer costs less
        than a thread hop and runs on the event loop; a large one goes to the pool."""
        started = time.perf_counter()
        plan = self.plan(query)
        prepared, result = await self._run(plan, query.source)
        if _small_answer(plan, prepared, result):
            with self.threads.single():  # a few small ops
                answer = explain_answer(plan, prepared, result)
        else:
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(self._pool, explain_answer, plan, prepared, result)
        answer.timings = {
            "decode_ms": prepared.decode_s * 1e3,
            "queue_ms": result.queue_s * 1e3,
            "compute_ms": result.compute_s * 1e3,
            "total_ms": (time.perf_counter() - started) * 1e3,
        }
        return answer

    async def embed(self, query: ExplainQuery) -> EmbedAnswer:
        """The embedding method's vector."""
        _, result = await self._run(self.plan(query), query.source)
        return embed_answer(result)

    async def activations(self, query: ExplainQuery, *, profile_only: bool) -> ActivationsAnswer:
        """The feature-map or channel-profile method's values."""
        _, result = await self._run(self.plan(query), query.source)
        return activations_answer(result, profile_only=profile_only)

    def filters(self, model: str, layer: str | None) -> tuple[str, np.ndarray]:
        """A convolution's weights ``(K, C, kh, kw)``; the first convolution by default."""
        loaded = self.model(model)
        if not loaded.primary.layer_access:
            raise InvalidArgument(f"model {loaded.name!r} is compiled: its filters cannot be read")
        name, weights = conv_weights(loaded.primary, layer or None)
        return name, weights.detach().float().cpu().numpy()

    async def _run(self, plan: Plan, source: ImageSource) -> tuple[PreparedInput, ItemResult]:
        """The input (from the cache, or decoded off the event loop), queued for a device
        worker; the worker's result for this request."""
        loop = asyncio.get_running_loop()
        with self.batcher.arriving():
            found = self._find_on_loop(plan, source)
            if not isinstance(found, tuple):
                found = await loop.run_in_executor(self._pool, self._find, plan, source, found)
            prepared, cached, key = found
            future: asyncio.Future[ItemResult] = loop.create_future()
            self.batcher.submit(
                WorkItem(
                    group=GroupKey(
                        model=plan.model.name,
                        method=plan.method,
                        layer=plan.layer,
                        options=plan.options,
                        shape=(3, *prepared.size),
                        faithfulness=plan.faithfulness,
                    ),
                    x=prepared.x,
                    target=plan.target,
                    future=future,
                    cached=cached,
                    cache_key=key,
                    want_raw=plan.output.return_raw,
                    deadline=plan.deadline,
                )
            )
        try:
            return prepared, await future
        except asyncio.CancelledError:
            future.cancel()
            raise

    def _find_on_loop(self, plan: Plan, source: ImageSource) -> Found | str | None:
        """The whole lookup on the event loop, when it is cheap: a small encoded image
        (hashing it takes microseconds), found in the memory tier, for a method that
        needs only its header. Otherwise the pool does the work (``_find``), given the
        key when the memory tier was consulted here and missed."""
        encoded = source.encoded
        if plan.cache_layer is None or encoded is None or len(encoded) > SMALL_PAYLOAD_BYTES:
            return None
        if self.cache.reads_pixels_on_hit(plan):
            return None
        key = self.cache.key(plan, source)
        cached = self.cache.find_in_memory(key)
        if cached is None:
            return key
        return self._header_only(plan, source), cached, key

    def _find(self, plan: Plan, source: ImageSource, missed_in_memory: str | None) -> Found:
        """Key, cached activation (or None) and the input, in one thread hop: a hit that
        needs no pixels reads only the image header; a miss decodes."""
        if plan.cache_layer is None:
            return self._decode(plan.model, source), None, None
        key = missed_in_memory or self.cache.key(plan, source)
        cached = self.cache.find(key, memory_missed=missed_in_memory is not None)
        if cached is None or self.cache.reads_pixels_on_hit(plan):
            return self._decode(plan.model, source), cached, key
        return self._header_only(plan, source), cached, key

    def _decode(self, loaded: LoadedModel, source: ImageSource) -> PreparedInput:
        """Decode and preprocess (or validate a tensor): the full path of a cache miss."""
        started = time.perf_counter()
        with self.threads.full():
            x, placement = source.model_input(loaded, self.settings.max_image_pixels)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        return PreparedInput(x, size, placement, time.perf_counter() - started)

    def _header_only(self, plan: Plan, source: ImageSource) -> PreparedInput:
        """For a cache hit that needs no pixels: no input, no decode.

        An encoded image's header gives the picture's size. A tensor is not validated
        again: its key hashes its dtype, shape and bytes, so a hit means that this very
        tensor passed validation when its activation was computed.
        """
        started = time.perf_counter()
        size = source.picture_size(self.settings.max_image_pixels)
        assert size is not None  # a hit's tensor passed validation: it has (3, H, W)
        placement = None
        if source.encoded is not None:
            placement = plan.model.preprocess.placement(size)
            size = plan.model.primary.input_size
        return PreparedInput(None, size, placement, time.perf_counter() - started)


def _small_answer(plan: Plan, prepared: PreparedInput, result: ItemResult) -> bool:
    """Whether shaping the answer is cheap enough to do on the event loop (no thread hop).

    Resizing heatmaps onto a large picture takes milliseconds and goes to the pool;
    up to ``INLINE_ANSWER_PIXELS`` pixels in all, it costs less than the hop.
    """
    height, width = prepared.output_size(plan.output.size)
    maps = len(result.targets) * (2 if plan.output.return_raw else 1)
    return height * width * maps <= INLINE_ANSWER_PIXELS
