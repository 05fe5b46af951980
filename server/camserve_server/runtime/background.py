"""Background work on a device worker: one short call at a time, behind explanations.

Optimisation jobs and evaluations run this way: each call holds the device for one step
(``Priority.BACKGROUND``), so explanation batches take it between steps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from ..models import ExplainableModel
from .device_slot import Priority
from .workers import DeviceWorker

log = logging.getLogger(__name__)

T = TypeVar("T")
Models = dict[str, ExplainableModel]


async def background_step(worker: DeviceWorker, fn: Callable[[Models], T]) -> T:
    """``fn`` on the worker's device thread. On cancellation, the call in flight (one step at
    most) is let finish before ``CancelledError`` propagates, so the worker is free then."""
    call = asyncio.ensure_future(worker.run_step(fn, priority=Priority.BACKGROUND))
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        await asyncio.wait([call])
        if not call.cancelled() and call.exception() is not None:
            log.debug("a background step failed after its caller left", exc_info=call.exception())
        raise
