"""The server's interceptors: ``ErrorInterceptor`` maps errors to statuses and records the
standard gRPC server metrics of every RPC; ``AuthInterceptor`` (``auth.py``) checks tokens.

``ErrorInterceptor`` comes first in the server's list, so it wraps every handler the
others return, auth's refusals included: each call is recorded with the status its
caller got. Internal errors reach the caller as a generic message, never a traceback;
the log keeps the details. A request that is not valid protobuf gets INVALID_ARGUMENT
and one log line. It is written by hand, not on the ``grpc-interceptor`` library: that
library's asyncio base class receives requests already decoded (a malformed one would
reach the caller as UNKNOWN), and wrapping the (de)serializers, for that and to count
messages, means overriding the one method it asks subclasses to leave alone.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio
from prometheus_client import Counter

from ..errors import CamserveError, InvalidArgument
from ..runtime.metrics import GRPC_TYPES, UNKNOWN, Metrics, RpcSeries
from .auth import UNKNOWN_METHOD_DENIAL, AuthInterceptor
from .recording import RecordedCall

__all__ = [
    "GENERIC_INTERNAL",
    "AuthInterceptor",
    "ErrorInterceptor",
    "MalformedMessage",
    "monotonic_deadline",
    "status_of",
]

log = logging.getLogger(__name__)

GENERIC_INTERNAL = "internal error; the server log has the details"

Behaviour = Callable[[Any, aio.ServicerContext], Any]
Deserializer = Callable[[bytes], Any]
Serializer = Callable[[Any], bytes]


class MalformedMessage(InvalidArgument):
    """A request message that is not valid protobuf for its RPC."""


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-safe message for an exception."""
    if isinstance(exc, CamserveError):
        return getattr(grpc.StatusCode, exc.status, grpc.StatusCode.INTERNAL), str(exc)
    return grpc.StatusCode.INTERNAL, GENERIC_INTERNAL


@dataclass(frozen=True)
class _Undecodable:
    """Stands in for a unary request that failed to decode. grpc decodes such a request
    before any handler runs, where an exception could only reach the caller as UNKNOWN
    (and the log as a traceback); the guarded handler raises ``error`` in its place."""

    error: MalformedMessage


def _decoder(
    deserializer: Deserializer | None, received: Counter, *, streaming: bool
) -> Deserializer:
    """``deserializer`` (None: the raw bytes), counting each message in ``received``, with
    a decode failure turned into ``MalformedMessage``: raised at once for a streamed
    request (decoded as the handler reads it), handed over as ``_Undecodable`` for a
    unary one."""

    def decode(raw: bytes) -> Any:
        received.inc()
        if deserializer is None:
            return raw
        try:
            return deserializer(raw)
        except DecodeError as exc:
            error = MalformedMessage(f"malformed request message: {exc}")
            if streaming:
                raise error from None
            return _Undecodable(error)

    return decode


def _encoder(serializer: Serializer | None, sent: Counter) -> Serializer:
    """``serializer`` (None: the reply is bytes already), counting each message in ``sent``."""

    def encode(reply: Any) -> bytes:
        sent.inc()
        return reply if serializer is None else serializer(reply)

    return encode


def _checked(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise request.error
    return request


def _guard(behaviour: Behaviour, method: str, series: RpcSeries) -> Behaviour | None:
    """``behaviour`` with its exceptions turned into statuses and the call recorded in
    ``series``, in the same style: grpc.aio iterates an async generator and awaits a
    coroutine function (the reader/writer API of health ``Watch``). None for a
    synchronous behaviour, which this server does not have."""
    if inspect.isasyncgenfunction(behaviour):

        async def replies(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            with RecordedCall(series, context):
                try:
                    async for reply in behaviour(_checked(request), context):
                        yield reply
                except Exception as exc:
                    await _abort(exc, context, method)

        return replies
    if inspect.iscoroutinefunction(behaviour):

        async def handle(request: Any, context: aio.ServicerContext) -> Any:
            with RecordedCall(series, context):
                try:
                    return await behaviour(_checked(request), context)
                except Exception as exc:
                    await _abort(exc, context, method)

        return handle
    return None


_SHAPES = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


class ErrorInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """For every RPC shape: map ``CamserveError`` (and anything unexpected) to a status, a
    request that does not decode to INVALID_ARGUMENT, and record the call in ``metrics``'
    standard gRPC server metrics (a registry of its own when None).

    A path no service serves gets grpc's UNIMPLEMENTED and is not recorded; refused by
    auth, it is recorded as the method ``unknown``: a caller's made-up path never
    becomes a label."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        for shape, factory in _SHAPES:
            behaviour = getattr(handler, shape)
            if behaviour is not None:
                series = self._series(handler, details.method)
                guarded = _guard(behaviour, details.method, series)
                if guarded is None:
                    return handler
                decode = _decoder(
                    handler.request_deserializer,
                    series.received,
                    streaming=handler.request_streaming,
                )
                encode = _encoder(handler.response_serializer, series.sent)
                return factory(guarded, decode, encode)
        return handler

    def _series(self, handler: grpc.RpcMethodHandler, path: str) -> RpcSeries:
        """The metrics of the method ``handler`` serves at ``path`` ("/package.Service/Method":
        a registered path, or else auth's refusal, recorded as ``unknown``)."""
        grpc_type = GRPC_TYPES[bool(handler.request_streaming), bool(handler.response_streaming)]
        if handler is UNKNOWN_METHOD_DENIAL:
            return self.metrics.rpc_series(grpc_type, UNKNOWN, UNKNOWN)
        service, _, method = path.lstrip("/").partition("/")
        return self.metrics.rpc_series(grpc_type, service, method)


async def _abort(exc: Exception, context: aio.ServicerContext, method: str) -> None:
    if isinstance(exc, aio.AbortError):
        raise exc
    code, message = status_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("internal error in %s", method)
    elif isinstance(exc, MalformedMessage):
        log.warning("%s from %s: %s", method, context.peer(), message)
    await context.abort(code, message)


def monotonic_deadline(context: aio.ServicerContext) -> float | None:
    """The caller's deadline on ``time.monotonic``'s clock, or None."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining
