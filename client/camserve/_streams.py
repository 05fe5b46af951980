"""A server-streaming job (an optimisation job, an evaluation) as events, for both clients.

Each message of the stream is parsed into an event; the last event is the result. Leaving
the event iterator early (``break``, an exception, ``KeyboardInterrupt``, garbage
collection, an asyncio task cancelled) cancels the call, and the server stops the job
within one unit of work.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterable
from typing import Any, TypeVar

import grpc

from camserve.errors import InternalError, from_rpc_error

Request = TypeVar("Request")
Event = TypeVar("Event")
Result = TypeVar("Result")

ProgressCallback = Callable[[Any], Any]
"""Called with each event before the result; may return an awaitable in the asyncio client."""


def iterate(call: Any, parse: Callable[[Any], Event]) -> Generator[Event, None, None]:
    """The stream of a blocking call as events; the call is cancelled when the caller leaves."""
    try:
        for message in call:
            yield parse(message)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None
    finally:
        call.cancel()


async def astream(
    build: Callable[[], Request],
    start: Callable[[Request], Any],
    parse: Callable[[Any], Event],
) -> AsyncGenerator[Event, None]:
    """An asyncio call as events: the request is built (images read and encoded) in a worker
    thread, then the call started; it is cancelled when the caller leaves."""
    request = await asyncio.to_thread(build)
    call = start(request)
    try:
        async for message in call:
            yield parse(message)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None
    finally:
        call.cancel()


def collect(
    events: Iterable[Any], result: type[Result], on_progress: ProgressCallback | None
) -> Result:
    """Run the stream to its ``result``, passing every other event to ``on_progress``; the
    stream is closed either way."""
    try:
        for item in events:
            if isinstance(item, result):
                return item
            if on_progress is not None:
                on_progress(item)
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
    raise InternalError("the job stream ended without a result")


async def acollect(
    events: AsyncIterator[Any], result: type[Result], on_progress: ProgressCallback | None
) -> Result:
    """``collect`` for the asyncio client; ``on_progress`` may be a coroutine function."""
    try:
        async for item in events:
            if isinstance(item, result):
                return item
            if on_progress is not None:
                outcome = on_progress(item)
                if inspect.isawaitable(outcome):
                    await outcome
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    raise InternalError("the job stream ended without a result")


__all__ = ["ProgressCallback", "acollect", "astream", "collect", "iterate"]
