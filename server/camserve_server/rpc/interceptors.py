"""Server interceptors: domain errors to status codes (one place), and bearer-token auth.

Internal errors reach the caller as a generic message, never a traceback; the
log keeps the details. The health service stays reachable without a token, so
Kubernetes probes work when auth is on.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc import aio

from ..errors import CamserveError
from ..runtime.metrics import Metrics

log = logging.getLogger(__name__)

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
GENERIC_INTERNAL = "internal error; the server log has the details"


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-safe message for an exception."""
    if isinstance(exc, CamserveError):
        return getattr(grpc.StatusCode, exc.status, grpc.StatusCode.INTERNAL), str(exc)
    return grpc.StatusCode.INTERNAL, GENERIC_INTERNAL


def _method_labels(details: grpc.HandlerCallDetails) -> tuple[str, str]:
    rpc = details.method.rsplit("/", 1)[-1]
    return rpc, rpc


class ErrorInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Map ``CamserveError`` (and anything unexpected) to a status, for every RPC kind."""

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
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary_unary(request: Any, context: aio.ServicerContext) -> Any:
                try:
                    return await inner(request, context)
                except Exception as exc:
                    await _abort(exc, context, details.method)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream or handler.unary_stream:
            streaming = handler.stream_stream or handler.unary_stream

            async def stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    async for reply in streaming(request, context):
                        yield reply
                except Exception as exc:
                    await _abort(exc, context, details.method)

            factory = (
                grpc.stream_stream_rpc_method_handler
                if handler.stream_stream
                else grpc.unary_stream_rpc_method_handler
            )
            return factory(stream, handler.request_deserializer, handler.response_serializer)
        return handler


async def _abort(exc: Exception, context: aio.ServicerContext, method: str) -> None:
    if isinstance(exc, aio.AbortError):
        raise exc
    code, message = status_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("internal error in %s", method)
    await context.abort(code, message)


class AuthInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Require ``authorization: Bearer <token>`` on every call but health and reflection."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = [token.encode() for token in tokens]

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(OPEN_SERVICES) or self._authorised(details):
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
