"""Domain errors. Each carries the name of the gRPC status it maps to.

The engine raises these without importing grpc; one server interceptor turns
them into status codes (``camserve_server.rpc.interceptors``).
"""

from __future__ import annotations

from collections.abc import Iterable


class CamserveError(Exception):
    """Base class of every error camserve raises on purpose."""

    status: str = "INTERNAL"


class InternalError(CamserveError):
    """An unexpected failure; the caller sees a generic message, the log the details."""

    status = "INTERNAL"


class InvalidArgument(CamserveError, ValueError):
    """The request is malformed: bad tensor, unknown method or layer, bad option."""

    status = "INVALID_ARGUMENT"


class NotFound(CamserveError, LookupError):
    """A named thing (a model, an image set) does not exist."""

    status = "NOT_FOUND"


class FailedPrecondition(CamserveError):
    """The request is well formed but cannot be served by this model or state."""

    status = "FAILED_PRECONDITION"


class Overloaded(CamserveError):
    """The queue is full: try again later."""

    status = "RESOURCE_EXHAUSTED"


class Unavailable(CamserveError):
    """The server is shutting down or not ready."""

    status = "UNAVAILABLE"


class DeadlineExceeded(CamserveError):
    """The caller's deadline passed before the work could be done."""

    status = "DEADLINE_EXCEEDED"


class Unauthenticated(CamserveError):
    """A missing or wrong bearer token."""

    status = "UNAUTHENTICATED"


def choices(values: Iterable[object], limit: int = 40) -> str:
    """Format valid choices for an error message, shortened when there are many."""
    items = [str(v) for v in values]
    if len(items) > limit:
        return ", ".join(items[:limit]) + f", ... ({len(items)} in all)"
    return ", ".join(items)
