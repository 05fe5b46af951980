"""Bearer-token auth: every call needs a token but health (and reflection, when opened).

The health service stays reachable without a token, so Kubernetes probes work when
auth is on; reflection tells anyone the whole API, so it needs a token unless opened.
A refused call is answered UNAUTHENTICATED by a handler of the method's own shape that
never decodes the caller's message, whether or not the method exists.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc import aio

from ..errors import InvalidArgument

OPEN_SERVICES = ("/grpc.health.v1.Health/",)
REFLECTION = "/grpc.reflection."
REFUSAL = "missing or invalid bearer token"


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
        return deny_handler(await continuation(details))

    def _authorised(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                scheme, _, token = text.partition(" ")
                if scheme.lower() == "bearer":
                    given = token.strip().encode()
                    return any(hmac.compare_digest(given, t) for t in self._tokens)
        return False


async def _deny_unary(_request: Any, context: aio.ServicerContext) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)


async def _deny_stream(_request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)
    yield None  # pragma: no cover - unreachable, makes this an async generator


def _unread(_raw: bytes) -> None:
    """The deserializer of a refused call: its message is never decoded."""


UNKNOWN_METHOD_DENIAL = grpc.unary_unary_rpc_method_handler(_deny_unary, _unread)
"""The refusal of a call to a method no service has: the same UNAUTHENTICATED as for a
method that exists, so a caller without a token learns nothing of the API."""


def deny_handler(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s shape that answers UNAUTHENTICATED."""
    if handler is None:
        return UNKNOWN_METHOD_DENIAL
    serializer = handler.response_serializer
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(_deny_stream, _unread, serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_deny_stream, _unread, serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_deny_unary, _unread, serializer)
    return grpc.unary_unary_rpc_method_handler(_deny_unary, _unread, serializer)
