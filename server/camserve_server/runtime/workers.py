"""Device workers: one per device, each running batches on its own copy of every model.

A worker takes a batch from the batcher, drops requests whose caller left or
whose deadline passed, and computes the rest in its own thread (the event loop
stays free). A failure fails only the requests it must: out of memory splits
the batch and retries the halves; any other error retries each request alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from ..errors import CamserveError, DeadlineExceeded, Overloaded
from ..methods import BatchResult, explain, get_method

__all__ = ["CacheWriter", "DeviceWorker", "InternalError", "ItemResult", "explain"]
from ..models import ExplainableModel
from .batcher import Batcher, WorkItem
from .metrics import Metrics

log = logging.getLogger(__name__)

CacheWriter = Callable[[str, torch.Tensor, torch.Tensor], None]


class InternalError(CamserveError):
    """An unexpected failure; the caller sees a generic message, the log the details."""

    status = "INTERNAL"


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
        cache_writer: CacheWriter | None = None,
    ) -> None:
        self.device = device
        self.models = models
        self.batcher = batcher
        self.metrics = metrics
        self.cache_writer = cache_writer
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"worker-{device}")

    async def run(self) -> None:
        """Serve batches until the batcher is closed and drained."""
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.batcher.next_batch()
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
            for item in live:
                self.metrics.queue_wait.labels(group.model, group.method).observe(
                    now - item.enqueued
                )
            self.metrics.batch_size.labels(group.model, group.method).observe(len(live))
            outcomes = await loop.run_in_executor(self._thread, self.compute, live)
            for item, outcome in zip(live, outcomes, strict=True):
                if item.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    item.future.set_exception(outcome)
                else:
                    outcome.queue_s = now - item.enqueued
                    item.future.set_result(outcome)
        self._thread.shutdown(wait=True)

    def compute(self, items: list[WorkItem]) -> list[ItemResult | CamserveError]:
        """Run one batch; on failure split it so only the failing requests fail."""
        group = items[0].group
        try:
            return list(self._compute_batch(items))
        except torch.OutOfMemoryError:
            self.metrics.batch_failures.labels(group.model, group.method, "oom").inc()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(items) == 1:
                return [Overloaded("out of device memory for this request; try a smaller input")]
            half = len(items) // 2
            return self.compute(items[:half]) + self.compute(items[half:])
        except CamserveError as exc:
            if len(items) == 1:
                return [exc]
            self.metrics.batch_failures.labels(group.model, group.method, "invalid").inc()
            return [outcome for item in items for outcome in self.compute([item])]
        except Exception:
            log.exception("batch of %d %s/%s failed", len(items), group.model, group.method)
            self.metrics.batch_failures.labels(group.model, group.method, "internal").inc()
            if len(items) == 1:
                return [InternalError("internal error while computing the explanation")]
            return [outcome for item in items for outcome in self.compute([item])]

    def _compute_batch(self, items: list[WorkItem]) -> list[ItemResult]:
        group = items[0].group
        model = self.models[group.model]
        started = time.perf_counter()
        x = torch.stack([item.x for item in items]).to(model.device, non_blocking=True)
        result = explain(
            model,
            group.method,
            x,
            targets=[item.target for item in items],
            layer=group.layer,
            options=dict(group.options),
            cached=[item.cached for item in items],
        )
        outcomes = self._unpack(result, items)
        self._write_cache(result, items)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
            self.metrics.device_memory.labels(str(model.device)).set(
                torch.cuda.memory_allocated(model.device)
            )
        elapsed = time.perf_counter() - started
        self.metrics.compute.labels(group.model, group.method).observe(elapsed)
        for outcome in outcomes:
            outcome.compute_s = elapsed
        return outcomes

    @staticmethod
    def _unpack(result: BatchResult, items: list[WorkItem]) -> list[ItemResult]:
        outcomes = []
        values_only = not get_method(result.method).uses_targets
        for item, sample in zip(items, result.samples, strict=True):
            heat = sample.heatmaps.detach().float().cpu() if sample.heatmaps is not None else None
            keep_raw = item.want_raw or values_only
            raw = sample.raw.detach().float().cpu() if keep_raw and sample.raw is not None else None
            outcomes.append(
                ItemResult(
                    targets=[int(t) for t in sample.targets.tolist()],
                    heatmaps=heat,
                    raw=raw,
                    empty=[bool(e) for e in sample.empty.tolist()],
                    logits=sample.logits.detach().float().cpu(),
                    layer=result.layer,
                    variant=result.variant,
                    metrics={k: [float(v) for v in t.tolist()] for k, t in sample.metrics.items()},
                    channels=None if sample.channels is None else sample.channels.tolist(),
                    cache_hit=item.cached is not None,
                )
            )
        return outcomes

    def _write_cache(self, result: BatchResult, items: list[WorkItem]) -> None:
        if self.cache_writer is None or result.activations is None or result.logits is None:
            return
        if not get_method(items[0].group.method).caches_layer:
            return
        for i, item in enumerate(items):
            if item.cached is None and item.cache_key is not None:
                self.cache_writer(
                    item.cache_key, result.activations[i].detach().cpu(), result.logits[i].cpu()
                )
