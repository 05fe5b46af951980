"""``AsyncExplainClient``: ``ExplainClient`` for asyncio callers, over ``grpc.aio``.

Same methods, arguments, results and errors as ``ExplainClient``, as coroutines
(``visualize_events`` and ``evaluate_events`` return async generators). Create it inside
the event loop that uses it. Reading files and encoding images happen in a worker thread,
off the event loop; arguments are checked when a coroutine runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from camserve import _evaluate_calls, _explain_calls, _job_calls, _set_calls, _streams
from camserve._calls import EventStream, ExplainMany, Index, Unary, awaiting, streaming
from camserve._channel import ChannelConfig, open_aio_channel
from camserve._connection import Connection
from camserve.errors import CamserveError, from_rpc_error
from camserve.sets import IndexResult
from camserve.v1 import explain_pb2 as pb

T = TypeVar("T")
E = TypeVar("E")
Message = TypeVar("Message")


async def _off_the_loop(messages: Iterator[Message]) -> AsyncIterator[Message]:
    """``messages``, each one made in a worker thread (they read and encode images)."""
    while (message := await asyncio.to_thread(next, messages, None)) is not None:
        yield message


class AsyncExplainClient(Connection[grpc.aio.Channel]):
    """An asyncio client; ``async with`` it, or ``await close()``. Options as ``ExplainClient``."""

    def _open(self, config: ChannelConfig) -> grpc.aio.Channel:
        return open_aio_channel(config)

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _unary(self, call: Unary[T]) -> T:
        request = await asyncio.to_thread(call.build) if call.reads_images else call.build()
        try:
            reply = await call.rpc(self._stubs)(request, **self._per_call(call.timeout))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return call.parse(reply)

    async def _explain_many(self, call: ExplainMany[T]) -> T:
        run = call.run
        outbox: asyncio.Queue[pb.ExplainRequest | None] = asyncio.Queue()

        async def send() -> None:
            for request in await asyncio.to_thread(run.next_requests):
                outbox.put_nowait(request)
            if run.exhausted:
                outbox.put_nowait(None)

        async def requests() -> AsyncIterator[pb.ExplainRequest]:
            while (request := await outbox.get()) is not None:
                yield request

        await send()
        if run.outstanding == 0:
            return call.result(None)
        stream = self._stubs.explain.ExplainStream(
            requests(), **self._per_call(call.deadline(self.config.timeout))
        )
        stream_error: CamserveError | None = None
        try:
            async for reply in stream:
                run.on_reply(reply)
                if not run.exhausted:
                    await send()
        except grpc.RpcError as exc:
            stream_error = from_rpc_error(exc)
        finally:
            outbox.put_nowait(None)
            stream.cancel()
        return call.result(stream_error)

    def _events(self, call: EventStream[E]) -> AsyncGenerator[E, None]:
        def start(request: Any) -> Any:
            deadline = call.deadline(request, self.config.timeout)
            return call.rpc(self._stubs)(request, **self._per_call(deadline))

        return _streams.astream(call.build, start, call.parse)

    async def _index(self, call: Index) -> IndexResult:
        run = call.run
        while True:  # a stream cut with UNAVAILABLE is resumed (see IndexRun)
            left = run.time_left(call.timeout, self.config.timeout)  # of the whole call
            try:
                stream = self._stubs.sets.IndexImages(
                    _off_the_loop(run.requests()), **self._per_call(left)
                )
                async for reply in stream:
                    run.on_reply(reply)
                return run.finish()
            except grpc.RpcError as exc:
                await asyncio.sleep(run.resume_or_raise(exc))

    # The methods: arguments, documentation and requests in camserve._*_calls.
    explain = awaiting(_explain_calls.explain)
    explain_many = awaiting(_explain_calls.explain_many)
    embed = awaiting(_explain_calls.embed)
    activations = awaiting(_explain_calls.activations)
    filters = awaiting(_explain_calls.filters)
    models = awaiting(_explain_calls.models)
    methods = awaiting(_explain_calls.methods)
    health = awaiting(_explain_calls.health)

    visualize_events = streaming(_job_calls.visualize_events)
    visualize = awaiting(_job_calls.visualize)
    job_methods = awaiting(_job_calls.job_methods)

    evaluate_events = streaming(_evaluate_calls.evaluate_events)
    evaluate = awaiting(_evaluate_calls.evaluate)

    index = awaiting(_set_calls.index)
    top_activating = awaiting(_set_calls.top_activating)
    neighbours = awaiting(_set_calls.neighbours)
    embedding_map = awaiting(_set_calls.embedding_map)
    sets = awaiting(_set_calls.sets)
    describe_set = awaiting(_set_calls.describe_set)
    delete_set = awaiting(_set_calls.delete_set)


__all__ = ["AsyncExplainClient"]
