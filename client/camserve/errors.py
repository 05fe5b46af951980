"""The SDK's exception tree: one class per family of gRPC status codes.

Every failed call raises a ``CamserveError`` subclass carrying the status code
(``.code``, a ``grpc.StatusCode``) and the server's message (``.details``). The
mapping between status codes and classes lives here, in ``_CODES``, and nowhere else.
"""

from __future__ import annotations

from typing import Final

import grpc


class CamserveError(Exception):
    """Base class of every error the SDK raises.

    ``code`` is the gRPC status code, ``details`` the server's message, and
    ``index`` the position of the failed item in an ``explain_many`` call (else None).
    """

    default_code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self, details: str, code: grpc.StatusCode | None = None, *, index: int | None = None
    ) -> None:
        super().__init__(details)
        self.details = details
        self.code = code if code is not None else self.default_code
        self.index = index

    def __str__(self) -> str:
        where = f"item {self.index}: " if self.index is not None else ""
        return f"{where}{self.code.name}: {self.details}"


class InvalidArgumentError(CamserveError, ValueError):
    """The request is malformed (bad method, option, layer, target or image); also a ValueError.

    Raised by the SDK itself, before sending, for arguments it can check locally.
    """


class NotFoundError(CamserveError):
    """A named thing does not exist on the server (e.g. an unknown model)."""


class OverloadedError(CamserveError):
    """The server's queue is full (RESOURCE_EXHAUSTED): try again later."""


class UnavailableError(CamserveError):
    """The server cannot be reached, is starting up or shutting down (UNAVAILABLE)."""


class DeadlineExceededError(CamserveError):
    """The call's deadline passed before the server answered."""


class UnauthenticatedError(CamserveError):
    """A missing or wrong bearer token (UNAUTHENTICATED), or no permission (PERMISSION_DENIED)."""


class ConflictError(CamserveError):
    """The request conflicts with the server's state: a set of that name exists with other
    settings (ALREADY_EXISTS), or the server is not in the state the call needs
    (FAILED_PRECONDITION)."""


class InternalError(CamserveError):
    """Any other failure (INTERNAL, UNKNOWN, UNIMPLEMENTED, CANCELLED, ...)."""


_CODES: Final[dict[type[CamserveError], tuple[grpc.StatusCode, ...]]] = {
    InvalidArgumentError: (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE),
    NotFoundError: (grpc.StatusCode.NOT_FOUND,),
    OverloadedError: (grpc.StatusCode.RESOURCE_EXHAUSTED,),
    UnavailableError: (grpc.StatusCode.UNAVAILABLE,),
    DeadlineExceededError: (grpc.StatusCode.DEADLINE_EXCEEDED,),
    UnauthenticatedError: (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED),
    ConflictError: (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION),
    InternalError: (grpc.StatusCode.INTERNAL,),
}
"""Each class's status codes, its ``default_code`` first; a code not listed: ``InternalError``."""
for _class, _codes in _CODES.items():
    _class.default_code = _codes[0]
_CLASSES: Final = {code: cls for cls, codes in _CODES.items() for code in codes}
_BY_NUMBER: Final[dict[int, grpc.StatusCode]] = {code.value[0]: code for code in grpc.StatusCode}


def error_for(code: grpc.StatusCode, details: str, *, index: int | None = None) -> CamserveError:
    """The exception for a status code and message."""
    return _CLASSES.get(code, InternalError)(details, code, index=index)


def from_status(number: int, message: str, *, index: int | None = None) -> CamserveError:
    """The exception for a numeric status code (as in ``ExplainStream``'s ``Error``)."""
    return error_for(_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN), message, index=index)


def from_rpc_error(error: grpc.RpcError) -> CamserveError:
    """The exception for a failed call; use as ``raise from_rpc_error(e) from None``."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return error_for(code, str(details or code.name.lower().replace("_", " ")))


__all__ = [
    "CamserveError",
    "ConflictError",
    "DeadlineExceededError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OverloadedError",
    "UnauthenticatedError",
    "UnavailableError",
    "error_for",
    "from_rpc_error",
    "from_status",
]
