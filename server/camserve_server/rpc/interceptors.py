"""Server interceptors: domain errors to status codes (one place), and bearer-token auth.

Internal errors reach the caller as a generic message, never a traceback; the
log keeps the details. A request that is not valid protobuf gets INVALID_ARGUMENT
and one log line. The health service stays reachable without a token, so
Kubernetes probes work when auth is on; reflection needs a token unless opened.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from ..errors import CamserveError, InvalidArgument
from ..runtime.metrics import Metrics

log = logging.getLogger(__name__)

OPEN_SERVICES = ("/grpc.health.v1.Health/",)
REFLECTION = "/grpc.reflection."
GENERIC_INTERNAL = "internal error; the server log has the details"

Behaviour = Callable[[Any, aio.ServicerContext], Any]
Deserializer = Callable[[bytes], Any]


class MalformedMessage(InvalidArgument):
    """A request message that is not valid protobuf for its RPC."""


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-safe message for an exception."""
    if isinstance(exc, CamserveError):
        return getattr(grpc.StatusCode, exc.status, grpc.StatusCode.INTERNAL), str(exc)
    return grpc.StatusCode.INTERNAL, GENERIC_INTERNAL


def _method_labels(details: grpc.HandlerCallDetails) -> tuple[str, str]:
    rpc = details.method.rsplit("/", 1)[-1]
    return rpc, rpc


@dataclass(frozen=True)
class _Undecodable:
    """Stands in for a unary request that failed to decode. grpc decodes such a request
    before any handler runs, where an exception could only reach the caller as UNKNOWN
    (and the log as a traceback); the guarded handler raises ``error`` in its place."""

    error: MalformedMessage


def _decoder(deserializer: Deserializer | None, *, streaming: bool) -> Deserializer | None:
    """``deserializer``, with a decode failure turned into ``MalformedMessage``: raised at
    once for a streamed request (decoded as the handler reads it), handed over as
    ``_Undecodable`` for a unary one."""
    if deserializer is None:
        return None

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as exc:
            error = MalformedMessage(f"malformed request message: {exc}")
            if streaming:
                raise error from None
            return _Undecodable(error)

    return decode


def _checked(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise request.error
    return request


def _guard(behaviour: Behaviour, method: str) -> Behaviour | None:
    """``behaviour`` with its exceptions turned into statuses, in the same style: grpc.aio
    iterates an async generator and awaits a coroutine function (the reader/writer API of
    health ``Watch``). None for a synchronous behaviour, which this server does not have."""
    if inspect.isasyncgenfunction(behaviour):

        async def replies(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for reply in behaviour(_checked(request), context):
                    yield reply
            except Exception as exc:
                await _abort(exc, context, method)

        return replies
    if inspect.iscoroutinefunction(behaviour):

        async def handle(request: Any, context: aio.ServicerContext) -> Any:
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
    """Map ``CamserveError`` (and anything unexpected) to a status, for every RPC shape,
    and a request that does not decode to INVALID_ARGUMENT."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics

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
                guarded = _guard(behaviour, details.method)
                if guarded is None:
                    return handler
                decode = _decoder(handler.request_deserializer, streaming=handler.request_streaming)
                return factory(guarded, decode, handler.response_serializer)
        return handler


async def _abort(exc: Exception, context: aio.ServicerContext, method: str) -> None:
    if isinstance(exc, aio.AbortError):
        raise exc
    code, message = status_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("internal error in %s", method)
    elif isinstance(exc, MalformedMessage):
        log.warning("%s from %s: %s", method, context.peer(), message)
    await context.abort(code, message)


class AuthInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Require ``authorization: Bearer <token>`` on every call but health (and reflection,
    when ``open_reflection``: it tells anyone the whole API, so it is closed by default)."""

    def __init__(self, tokens: Sequence[str], *, open_reflection: bool = False) -> None:
        if not tokens or any(not token.strip() for token in tokens):
            raise InvalidArgument(
                "auth needs at least one token, and none of them blank: a blank token "
                "would let a caller in with an empty one"
            )
        self._tokens = [token.encode() for token in tokens]
        self._open = (*OPEN_SERVICES, REFLECTION) if open_reflection else OPEN_SERVICES

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(self._open) or self._authorised(details):
            return await continuation(details)
        return _deny_handler(await continuation(details))

    def _authorised(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                scheme, _, token = text.partition(" ")
                if scheme.lower() == "bearer":
                    given = token.strip().encode()
                    return any(hmac.compare_digest(given, t) for t in self._tokens)
        return False


def _deny_handler(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    message = "missing or invalid bearer token"

    async def deny_unary(_request: Any, context: aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(_request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield None  # pragma: no cover - unreachable, makes this an async generator

    deserializer = handler.request_deserializer if handler else None
    serializer = handler.response_serializer if handler else None
    if handler is not None and (handler.stream_stream or handler.unary_stream):
        factory = (
            grpc.stream_stream_rpc_method_handler
            if handler.stream_stream
            else grpc.unary_stream_rpc_method_handler
        )
        return factory(deny_stream, deserializer, serializer)
    if handler is not None and handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny_unary, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(deny_unary, deserializer, serializer)


def monotonic_deadline(context: aio.ServicerContext) -> float | None:
    """The caller's deadline on ``time.monotonic``'s clock, or None."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining
