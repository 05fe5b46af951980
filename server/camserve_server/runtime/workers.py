"""Device workers: one per device, each running batches on its own copy of every model.

A worker takes a batch from the batcher, drops requests whose caller left or
whose deadline passed, and computes the rest off the event loop. It serves two
lanes, light methods and heavy ones, each in its own thread; both hold the
device's ``DeviceSlot`` while they compute, light batches first, and a heavy
batch hands the device over between its chunks whenever a light batch waits.
Jobs and indexing run one short step at a time through ``run_step``, behind
both. Faithfulness scores run after the method, in the same batch (heavy lane). A
failure fails only the requests it must: out of memory splits the batch and retries
the halves; any other error retries each request alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from ..errors import CamserveError, DeadlineExceeded, InternalError, Overloaded, Unavailable
from ..faithfulness import add_faithfulness
from ..methods import BatchResult
from ..methods.base import BatchInput
from ..methods.chunking import between_chunks
from ..methods.engine import run_batch
from ..models import ExplainableModel
from .activation_cache import ActivationCache
from .batcher import Batcher, WorkItem
from .device_slot import DeviceSlot, Priority
from .host_copy import to_host
from .intra_op import ThreadPolicy
from .metrics import Metrics
from .precision import mixed_precision

__all__ = ["DeviceWorker", "ItemResult", "run_batch"]

T = TypeVar("T")
STEP_THREADS = 4

log = logging.getLogger(__name__)


@dataclass
class ItemResult:
    """One request's answer, on the CPU, ready to serialise."""

    targets: list[int]
    heatmaps: torch.Tensor | None
    raw: torch.Tensor | None
    empty: list[bool]
    logits: torch.Tensor
    layer: str | None
    variant: str
    metrics: dict[str, list[float]] = field(default_factory=dict)
    channels: list[int] | None = None
    cache_hit: bool = False
    queue_s: float = 0.0
    compute_s: float = 0.0


class DeviceWorker:
    """Runs batches on one device until the batcher closes."""

    def __init__(
        self,
        device: torch.device,
        models: dict[str, ExplainableModel],
        batcher: Batcher,
        metrics: Metrics,
        cache: ActivationCache | None = None,
        autocast: torch.dtype | None = None,
        threads: ThreadPolicy | None = None,
    ) -> None:
        self.device = device
        self.autocast = autocast  # explanation batches run under torch.autocast with it
        self.models = models
        self.batcher = batcher
        self.metrics = metrics
        self.cache = cache  # the misses of a batch are written back to it
        self.slot = DeviceSlot()
        self.threads = threads or ThreadPolicy()
        self._lanes = {
            heavy: ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"worker-{device}-{'heavy' if heavy else 'light'}"
            )
            for heavy in (False, True)
        }
        self._steps = ThreadPoolExecutor(
            max_workers=STEP_THREADS, thread_name_prefix=f"worker-{device}-steps"
        )
        self._pending = 0
        self._stopped = False

    @property
    def pending(self) -> int:
        """Batches and steps queued or running on this worker."""
        return self._pending

    async def run(self) -> None:
        """Serve both lanes until the batcher is closed and drained."""
        try:
            await asyncio.gather(self._serve(heavy=False), self._serve(heavy=True))
        finally:
            self._stopped = True
            for executor in (*self._lanes.values(), self._steps):
                executor.shutdown(wait=True)

    async def run_step(
        self,
        fn: Callable[[dict[str, ExplainableModel]], T],
        *,
        priority: Priority = Priority.BACKGROUND,
    ) -> T:
        """Run ``fn(models)`` on this device, holding it only for this call.

        ``models`` maps each model name to this worker's replica. Keep a step
        short (one pass): explanation batches wait for it to finish.
        """
        if self._stopped:
            raise Unavailable("the server is shutting down")
        loop = asyncio.get_running_loop()
        self._pending += 1
        try:
            return await loop.run_in_executor(self._steps, self._hold_for_step, fn, priority)
        except RuntimeError as exc:  # the executor shut down under us
            if self._stopped:
                raise Unavailable("the server is shutting down") from exc
            raise
        finally:
            self._pending -= 1

    def _hold_for_step(
        self, fn: Callable[[dict[str, ExplainableModel]], T], priority: Priority
    ) -> T:
        with self.slot.hold(priority), self.threads.full():
            return fn(self.models)

    async def _serve(self, *, heavy: bool) -> None:
        loop = asyncio.get_running_loop()
        priority = Priority.HEAVY if heavy else Priority.LIGHT
        while True:
            batch = await self.batcher.next_batch(lambda group: group.heavy == heavy)
            if not batch:
                break
            now = time.monotonic()
            live = []
            for item in batch:
                if item.future.done():
                    continue
                if item.expired(now):
                    item.future.set_exception(DeadlineExceeded("the deadline passed while queued"))
                    continue
                live.append(item)
            if not live:
                continue
            group = live[0].group
            labels = (group.model, group.method.id)
            self.metrics.batch_size.labels(*labels).observe(len(live))
            self._pending += 1
            try:
                started, outcomes = await loop.run_in_executor(
                    self._lanes[heavy], self._compute_holding, live, priority
                )
            finally:
                self._pending -= 1
            for item in live:
                self.metrics.queue_wait.labels(*labels).observe(started - item.enqueued)
            for item, outcome in zip(live, outcomes, strict=True):
                if item.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    item.future.set_exception(outcome)
                else:
                    outcome.queue_s = started - item.enqueued
                    item.future.set_result(outcome)

    def _compute_holding(
        self, items: list[WorkItem], priority: Priority
    ) -> tuple[float, list[ItemResult | CamserveError]]:
        """``compute`` while holding the device. Between two chunks of a perturbation, path
        or sampling method the batch stops if none of its callers still waits (cancelled,
        gone, or past the deadline), then hands the device to waiting lighter batches.

        Returns when the device was acquired (the end of the queue wait) and the outcomes.
        """

        def between() -> None:
            if _abandoned(items):
                raise Abandoned
            self.slot.yield_to_waiting(priority)

        with self.slot.hold(priority), between_chunks(between):
            return time.monotonic(), self.compute(items)

    def compute(self, items: list[WorkItem]) -> list[ItemResult | CamserveError]:
        """Run one batch; on failure split it so only the failing requests fail."""
        group = items[0].group
        labels = (group.model, group.method.id)
        try:
            return list(self._compute_batch(items))
        except Abandoned:
            self.metrics.batch_failures.labels(*labels, "abandoned").inc()
            return [DeadlineExceeded("no caller waits for this batch any more") for _ in items]
        except torch.OutOfMemoryError:
            self.metrics.batch_failures.labels(*labels, "oom").inc()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(items) == 1:
                return [Overloaded("out of device memory for this request; try a smaller input")]
            half = len(items) // 2
            return self.compute(items[:half]) + self.compute(items[half:])
        except CamserveError as exc:
            if len(items) == 1:
                return [exc]
            self.metrics.batch_failures.labels(*labels, "invalid").inc()
            return [outcome for item in items for outcome in self.compute([item])]
        except Exception:
            log.exception("batch of %d %s/%s failed", len(items), *labels)
            self.metrics.batch_failures.labels(*labels, "internal").inc()
            if len(items) == 1:
                return [InternalError("internal error while computing the explanation")]
            return [outcome for item in items for outcome in self.compute([item])]

    def _compute_batch(self, items: list[WorkItem]) -> list[ItemResult]:
        """Run the planned batch: everything in it was checked when each request was planned."""
        group = items[0].group
        model = self.models[group.model]
        started = time.perf_counter()
        x = ActivationCache.batch_input(items).to(model.device, non_blocking=True)
        batch = BatchInput(
            model,
            x,
            [item.target for item in items],
            group.layer,
            dict(group.options),
            [item.cached for item in items],
        )
        threads = self.threads.single() if _head_only(items, model) else self.threads.full()
        with mixed_precision(model.device, self.autocast), threads:
            result = run_batch(group.method, batch)
            if group.faithfulness is not None:
                if any(item.x is None for item in items):
                    raise InternalError("faithfulness scores need every input's pixels")
                add_faithfulness(
                    group.faithfulness,
                    model,
                    x,
                    result.samples,
                    logits_in_float32=self.autocast is None,
                )
        outcomes = self._unpack(result, items)
        if group.faithfulness is not None:
            for outcome in outcomes:
                scores = {name: outcome.metrics[name] for name in group.faithfulness.scores}
                self.metrics.observe_faithfulness(group.model, group.method.id, scores)
        if self.cache is not None and group.method.caches_layer:
            self.cache.write_back(result, items)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
            self.metrics.device_memory.labels(str(model.device)).set(
                torch.cuda.memory_allocated(model.device)
            )
        elapsed = time.perf_counter() - started
        self.metrics.compute.labels(group.model, group.method.id).observe(elapsed)
        for outcome in outcomes:
            outcome.compute_s = elapsed
        return outcomes

    @staticmethod
    def _unpack(result: BatchResult, items: list[WorkItem]) -> list[ItemResult]:
        """Every sample's answer on the CPU, copied from the device in one transfer per dtype."""
        values_only = not items[0].group.method.uses_targets
        wanted: list[torch.Tensor | None] = []
        for item, sample in zip(items, result.samples, strict=True):
            keep_raw = item.want_raw or values_only
            wanted += [
                None if sample.heatmaps is None else sample.heatmaps.float(),
                sample.raw.float() if keep_raw and sample.raw is not None else None,
                sample.logits.float(),
                sample.targets,
                sample.empty,
                sample.channels,
                *(values.float() for values in sample.metrics.values()),
            ]
        host = iter(to_host(wanted))
        outcomes = []
        for item, sample in zip(items, result.samples, strict=True):
            heat, raw, logits, targets, empty, channels = (next(host) for _ in range(6))
            assert logits is not None and targets is not None and empty is not None
            metrics = {name: next(host) for name in sample.metrics}
            values = {k: t.tolist() for k, t in metrics.items() if t is not None}
            outcomes.append(
                ItemResult(
                    targets=[int(t) for t in targets.tolist()],
                    heatmaps=heat,
                    raw=raw,
                    empty=[bool(e) for e in empty.tolist()],
                    logits=logits,
                    layer=result.layer,
                    variant=result.variant,
                    metrics=values,
                    channels=None if channels is None else channels.tolist(),
                    cache_hit=item.cached is not None,
                )
            )
        return outcomes


class Abandoned(Exception):
    """Raised between two chunks when no caller of the batch waits any more."""


def _abandoned(items: list[WorkItem]) -> bool:
    """Whether every caller of ``items`` is gone: its future is done (cancelled, or the
    call ended) or its deadline has passed. Read from the worker thread: a future's
    state is a plain attribute, and a stale read only delays the stop by one chunk."""
    now = time.monotonic()
    return all(item.future.done() or item.expired(now) for item in items)


def _head_only(items: list[WorkItem], model: ExplainableModel) -> bool:
    """Whether a CPU batch is all cache hits of a light method that reads no pixels on a
    hit, without faithfulness scores: its work is the head after the layer, too small for
    the intra-op team."""
    group = items[0].group
    method = group.method
    return (
        model.device.type == "cpu"
        and not group.heavy
        and not method.pixels_on_cache_hit
        and all(item.cached is not None for item in items)
    )
