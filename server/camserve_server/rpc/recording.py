"""One call's standard gRPC metrics, recorded under the status its caller really gets.

That status is the one the handler (or the error mapping) aborted with or set on the
context; DEADLINE_EXCEEDED when the call ended past its deadline (grpc then cancels the
handler, or drops a reply made too late); CANCELLED when grpc cancelled the handler
because the call ended; OK otherwise.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

import grpc
from grpc import aio

from ..runtime.metrics import RpcSeries


def _ended_by_caller(error: BaseException | None) -> bool:
    """Whether grpc stopped the handler because the call ended: it cancels a coroutine,
    and closes an async generator of replies."""
    return isinstance(error, asyncio.CancelledError | GeneratorExit)


class RecordedCall:
    """A context manager around one call's handling: counts the call started on entry,
    and on exit counts it handled, under its status, and observes its duration."""

    __slots__ = ("_context", "_deadline", "_series", "_started")

    def __init__(self, series: RpcSeries, context: aio.ServicerContext) -> None:
        self._series = series
        self._context = context
        self._started = 0.0
        self._deadline: float | None = None

    def __enter__(self) -> RecordedCall:
        self._series.started.inc()
        self._started = time.perf_counter()
        remaining = self._context.time_remaining()
        self._deadline = None if remaining is None else self._started + remaining
        return self

    def __exit__(
        self,
        _kind: type[BaseException] | None,
        error: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        ended = time.perf_counter()
        late = self._deadline is not None and ended >= self._deadline
        code = self._code(error, late)
        self._series.handled(code.name, ended - self._started)

    def _code(self, error: BaseException | None, late: bool) -> grpc.StatusCode:
        if _ended_by_caller(error):
            return grpc.StatusCode.DEADLINE_EXCEEDED if late else grpc.StatusCode.CANCELLED
        chosen: Any = self._context.code()  # set by an abort or by set_code; else None
        if isinstance(chosen, grpc.StatusCode) and chosen != grpc.StatusCode.OK:
            return chosen
        if error is not None:  # not mapped to a status: grpc answers UNKNOWN
            return grpc.StatusCode.UNKNOWN
        return grpc.StatusCode.DEADLINE_EXCEEDED if late else grpc.StatusCode.OK
