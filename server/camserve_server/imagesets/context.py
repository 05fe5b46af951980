"""What every part of the image-set service shares, and where each kind of work runs.

Decoding and store I/O go to a thread pool, off the event loop; model passes go to a
device worker as one step at a given priority (indexing batches as ``BACKGROUND``, so
explanation batches get the device between two of them; queries as ``LIGHT``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from ..config import Settings
from ..errors import FailedPrecondition, choices
from ..models import ExplainableModel
from ..models.loading import LoadedModel
from ..runtime.device_slot import Priority
from ..runtime.metrics import Metrics
from ..runtime.workers import DeviceWorker
from .records import SetInfo, check_set_name
from .store import SetStore

T = TypeVar("T")


@dataclass(eq=False)
class ImageSetContext:
    """The settings, served models, store, thread pool and device workers of the service."""

    settings: Settings
    models: dict[str, LoadedModel]
    pick_worker: Callable[[], DeviceWorker]
    metrics: Metrics
    store: SetStore
    _pool: ThreadPoolExecutor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, self.settings.decode_threads), thread_name_prefix="imagesets"
        )

    def close(self) -> None:
        """Stop the thread pool and release the store."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    async def off_loop(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in the thread pool (decoding, store I/O, projections)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def on_device(
        self, fn: Callable[[dict[str, ExplainableModel]], T], priority: Priority
    ) -> T:
        """``fn(models)`` as one step on the least busy device worker."""
        return await self.pick_worker().run_step(fn, priority=priority)

    async def describe(self, name: str) -> SetInfo:
        """The named set's description; ``NotFound`` when there is none."""
        return await self.off_loop(self.store.get, check_set_name(name))

    def set_model(self, info: SetInfo) -> LoadedModel:
        """The served model a set was indexed with; ``FailedPrecondition`` when not served."""
        try:
            return self.models[info.model]
        except KeyError:
            raise FailedPrecondition(
                f"image set {info.name!r} was indexed with model {info.model!r}, "
                f"which this server does not serve (served: {choices(self.models)})"
            ) from None

    def observe_latency(self, query: str, started: float) -> None:
        """Record the seconds since ``started`` (``time.perf_counter``) for ``query``."""
        self.metrics.set_query_latency.labels(query).observe(time.perf_counter() - started)


__all__ = ["ImageSetContext"]
