"""camserve: the client SDK of the camserve explanation service.

``ExplainClient`` (blocking) and ``AsyncExplainClient`` (asyncio) call a server;
failures raise ``CamserveError`` subclasses. Importing this package needs only
grpcio, protobuf and numpy (Pillow is imported when an image needs encoding);
figures live in ``camserve.render``, imported on demand.
"""

from __future__ import annotations

from camserve.async_client import AsyncExplainClient
from camserve.client import ExplainClient
from camserve.errors import (
    CamserveError,
    ConflictError,
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OverloadedError,
    UnauthenticatedError,
    UnavailableError,
)
from camserve.results import (
    Activations,
    ClassScore,
    Explanation,
    Filters,
    MethodInfo,
    ModelInfo,
    Timings,
)

__version__ = "0.1.0"

__all__ = [
    "Activations",
    "AsyncExplainClient",
    "CamserveError",
    "ClassScore",
    "ConflictError",
    "DeadlineExceededError",
    "ExplainClient",
    "Explanation",
    "Filters",
    "InternalError",
    "InvalidArgumentError",
    "MethodInfo",
    "ModelInfo",
    "NotFoundError",
    "OverloadedError",
    "Timings",
    "UnauthenticatedError",
    "UnavailableError",
    "__version__",
]
