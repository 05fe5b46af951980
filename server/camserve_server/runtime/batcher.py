"""Dynamic batching: requests that can share a pass wait briefly for each other.

Requests are grouped by what must be equal to run in one batch (model, method,
layer, options, input size and faithfulness scores). A group flushes when it holds
``max_batch_size`` requests or its oldest one has waited ``max_delay``; the
worker that asks next gets the ready group with the oldest request. The queue
is bounded: past ``queue_size`` a request is refused at once.

A group also flushes at once when no other request is on its way (none is
being decoded): waiting would only add latency, so a lone caller never pays
``max_delay``, while concurrent callers still share batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import Overloaded
from ..faithfulness import Faithfulness
from ..methods import CachedLayer, Method, TargetRequest


@dataclass(frozen=True)
class GroupKey:
    """What requests must share to run in one batch: model, the method itself (its
    registered object), layer, parsed options, input shape ``(3, H, W)`` and the
    faithfulness scores computed with the maps (None: none)."""

    model: str
    method: Method
    layer: str | None
    options: tuple[tuple[str, Any], ...]
    shape: tuple[int, ...]
    faithfulness: Faithfulness | None = None

    @property
    def heavy(self) -> bool:
        """The lane: many passes per image (``Method.heavy``, or faithfulness scores, which
        run perturbed copies of every input) or light."""
        return self.method.heavy or self.faithfulness is not None


@dataclass(eq=False)
class WorkItem:
    """One request waiting for a worker; its future receives the result or the error.

    ``x`` is the input ``(3, H, W)``, or None for a cache hit that reads no pixels."""

    group: GroupKey
    x: torch.Tensor | None
    target: TargetRequest
    future: asyncio.Future[Any]
    cached: CachedLayer | None = None
    cache_key: str | None = None
    want_raw: bool = False
    deadline: float | None = None
    enqueued: float = field(default_factory=time.monotonic)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline


class Batcher:
    """Bounded, grouped request queue shared by every device worker."""

    def __init__(
        self,
        *,
        max_batch_size: int,
        max_delay_s: float,
        queue_size: int,
        heavy_batch_size: int | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self.max_batch_size = max(1, max_batch_size)
        self.max_delay_s = max(0.0, max_delay_s)
        self.queue_size = queue_size
        # Heavy methods run many passes per image: their batches stay small.
        heavy = self.max_batch_size if heavy_batch_size is None else heavy_batch_size
        self.heavy_batch_size = max(1, min(heavy, self.max_batch_size))
        self._on_depth = on_depth or (lambda _d: None)
        self._groups: dict[GroupKey, deque[WorkItem]] = {}
        self._depth = 0
        self._arriving = 0
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def depth(self) -> int:
        """Requests waiting for a worker."""
        return self._depth

    def submit(self, item: WorkItem) -> None:
        """Queue ``item`` or refuse it with ``Overloaded`` when the queue is full."""
        if self._depth >= self.queue_size:
            raise Overloaded(f"the queue is full ({self.queue_size} requests waiting); retry later")
        self._groups.setdefault(item.group, deque()).append(item)
        self._set_depth(self._depth + 1)
        self._changed.set()

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as on its way (being decoded) so batches wait for it.

        A request being decoded counts against ``queue_size`` too, so a full queue is
        refused before its image is decoded (at once, not after the decode it could not
        use), and a burst cannot hold more decoded images than the queue would."""
        if self._depth + self._arriving >= self.queue_size:
            raise Overloaded(f"the queue is full ({self.queue_size} requests waiting); retry later")
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1
            if self._arriving == 0:
                self._changed.set()

    def close(self) -> None:
        """Wake waiting workers so they can stop."""
        self._closed = True
        self._changed.set()

    async def next_batch(self, accept: Callable[[GroupKey], bool] | None = None) -> list[WorkItem]:
        """Wait for a ready group and take up to its batch limit; [] once closed and empty.

        ``accept`` restricts the groups this caller takes (a worker's lane for
        light or heavy methods); None takes any.
        """
        while True:
            self._drop_abandoned()
            now = time.monotonic()
            mine = {
                key: queue for key, queue in self._groups.items() if accept is None or accept(key)
            }
            ready = [
                (queue[0].enqueued, key)
                for key, queue in mine.items()
                if len(queue) >= self._limit(key)
                or now - queue[0].enqueued >= self.max_delay_s
                or self._arriving == 0
                or self._closed
            ]
            if ready:
                _, key = min(ready, key=lambda r: r[0])
                return self._take(key)
            if self._closed and not mine:
                return []
            timeout = None
            if mine:
                oldest = min(queue[0].enqueued for queue in mine.values())
                timeout = max(0.0, oldest + self.max_delay_s - now)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    def _limit(self, key: GroupKey) -> int:
        return self.heavy_batch_size if key.heavy else self.max_batch_size

    def _take(self, key: GroupKey) -> list[WorkItem]:
        queue = self._groups[key]
        batch = [queue.popleft() for _ in range(min(len(queue), self._limit(key)))]
        if not queue:
            del self._groups[key]
        self._set_depth(self._depth - len(batch))
        return batch

    def _drop_abandoned(self) -> None:
        """Forget requests whose caller has gone (their future was cancelled)."""
        for key in list(self._groups):
            queue = self._groups[key]
            kept = deque(item for item in queue if not item.future.done())
            if len(kept) != len(queue):
                self._set_depth(self._depth - (len(queue) - len(kept)))
                if kept:
                    self._groups[key] = kept
                else:
                    del self._groups[key]

    def _set_depth(self, depth: int) -> None:
        self._depth = depth
        self._on_depth(depth)
