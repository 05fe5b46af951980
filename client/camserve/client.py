"""``ExplainClient``: the blocking client of a camserve server.

Every method raises a ``CamserveError`` subclass on failure (see ``camserve.errors``).
Calls take the client's ``timeout`` as their deadline unless given their own.
The client is thread-safe: one instance may serve many threads.

The methods, their arguments and documentation are written once for both clients
(``camserve._explain_calls``, ``_job_calls``, ``_evaluate_calls``, ``_set_calls``); this
module says how a blocking client runs them.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Generator
from types import TracebackType
from typing import Self, TypeVar

import grpc

from camserve import _evaluate_calls, _explain_calls, _job_calls, _set_calls, _streams
from camserve._calls import EventStream, ExplainMany, Index, Unary, blocking
from camserve._channel import ChannelConfig, open_channel
from camserve._connection import Connection
from camserve.errors import CamserveError, from_rpc_error
from camserve.sets import IndexResult
from camserve.v1 import explain_pb2 as pb

T = TypeVar("T")
E = TypeVar("E")


class ExplainClient(Connection[grpc.Channel]):
    """A blocking client; use it as a context manager, or call ``close``.

    ``address`` is ``host:port``. ``timeout`` is the default deadline of each
    call in seconds (None: no deadline). ``tls=True`` (implied by any
    certificate) opens a TLS channel, verified against ``root_certificates``
    (PEM bytes or a file path; default: the system's roots);
    ``certificate_chain`` and ``private_key`` present a client certificate
    (mTLS). ``token`` is sent as ``authorization: Bearer <token>``. Calls that
    fail with UNAVAILABLE are retried by gRPC, up to ``max_attempts`` attempts
    in all, with exponential backoff.
    """

    def _open(self, config: ChannelConfig) -> grpc.Channel:
        return open_channel(config)

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _unary(self, call: Unary[T]) -> T:
        request = call.build()
        try:
            reply = call.rpc(self._stubs)(request, **self._per_call(call.timeout))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return call.parse(reply)

    def _explain_many(self, call: ExplainMany[T]) -> T:
        run = call.run
        outbox: queue.SimpleQueue[pb.ExplainRequest | None] = queue.SimpleQueue()

        def send() -> None:
            for request in run.next_requests():
                outbox.put(request)
            if run.exhausted:
                outbox.put(None)

        send()
        if run.outstanding == 0:
            return call.result(None)
        deadline = call.deadline(self.config.timeout)
        stream = self._stubs.explain.ExplainStream(
            iter(outbox.get, None), **self._per_call(deadline)
        )
        stream_error: CamserveError | None = None
        try:
            for reply in stream:
                run.on_reply(reply)
                if not run.exhausted:
                    send()
        except grpc.RpcError as exc:
            stream_error = from_rpc_error(exc)
        finally:
            outbox.put(None)  # lets gRPC's request-reading thread finish
            stream.cancel()
        return call.result(stream_error)

    def _events(self, call: EventStream[E]) -> Generator[E, None, None]:
        request = call.build()
        deadline = call.deadline(request, self.config.timeout)
        stream = call.rpc(self._stubs)(request, **self._per_call(deadline))
        return _streams.iterate(stream, call.parse)

    def _index(self, call: Index) -> IndexResult:
        run = call.run
        while True:  # a stream cut with UNAVAILABLE is resumed (see IndexRun)
            left = run.time_left(call.timeout, self.config.timeout)  # of the whole call
            try:
                for reply in self._stubs.sets.IndexImages(run.requests(), **self._per_call(left)):
                    run.on_reply(reply)
                return run.finish()
            except grpc.RpcError as exc:
                time.sleep(run.resume_or_raise(exc))

    # The methods: arguments, documentation and requests in camserve._*_calls.
    explain = blocking(_explain_calls.explain)
    explain_many = blocking(_explain_calls.explain_many)
    embed = blocking(_explain_calls.embed)
    activations = blocking(_explain_calls.activations)
    filters = blocking(_explain_calls.filters)
    models = blocking(_explain_calls.models)
    methods = blocking(_explain_calls.methods)
    health = blocking(_explain_calls.health)

    visualize_events = blocking(_job_calls.visualize_events)
    visualize = blocking(_job_calls.visualize)
    job_methods = blocking(_job_calls.job_methods)

    evaluate_events = blocking(_evaluate_calls.evaluate_events)
    evaluate = blocking(_evaluate_calls.evaluate)

    index = blocking(_set_calls.index)
    top_activating = blocking(_set_calls.top_activating)
    neighbours = blocking(_set_calls.neighbours)
    embedding_map = blocking(_set_calls.embedding_map)
    sets = blocking(_set_calls.sets)
    describe_set = blocking(_set_calls.describe_set)
    delete_set = blocking(_set_calls.delete_set)


__all__ = ["ExplainClient"]
