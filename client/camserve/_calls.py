"""Client methods written once for both clients, as functions that return a ``Call``.

A ``Call`` is what one method call does apart from how the client waits: which RPC,
the request (built when the call runs, so the asyncio client can build one that reads
files in a worker thread), and how the reply becomes the result. ``_explain_calls``,
``_job_calls`` and ``_set_calls`` write each method as a function of its arguments
that returns a ``Call``; ``blocking``, ``awaiting`` and ``streaming`` make that function
a method of ``ExplainClient`` or ``AsyncExplainClient``, with its signature and
docstring; the client runs the ``Call`` (``_unary``, ``_explain_many``, ``_job_events``,
``_index``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast

from camserve import _visualize
from camserve.jobs import VisualizationEvent, VisualizationResult
from camserve.sets import IndexResult

if TYPE_CHECKING:
    from camserve._connection import Stubs
    from camserve._many import ManyRun
    from camserve._sets import IndexRun
    from camserve.async_client import AsyncExplainClient
    from camserve.client import ExplainClient
    from camserve.errors import CamserveError
    from camserve.v1 import jobs_pb2 as jpb

P = ParamSpec("P")
T = TypeVar("T")
Method = TypeVar("Method", bound=Callable[..., Any])


class Call(Generic[T]):
    """One method call, run by either client; its result is a ``T``."""

    def blocking(self, client: ExplainClient) -> T:
        raise NotImplementedError

    def awaiting(self, client: AsyncExplainClient) -> Awaitable[T]:
        raise NotImplementedError


@dataclass(frozen=True)
class Unary(Call[T]):
    """One request, one reply: ``rpc`` picks the stub's method, ``build`` makes the request
    and ``parse`` reads the reply. ``reads_images``: ``build`` reads files or encodes
    images, so the asyncio client runs it in a worker thread."""

    rpc: Callable[[Stubs], Any]
    build: Callable[[], Any]
    parse: Callable[[Any], T]
    timeout: float | None
    reads_images: bool = False

    def blocking(self, client: ExplainClient) -> T:
        return client._unary(self)

    def awaiting(self, client: AsyncExplainClient) -> Awaitable[T]:
        return client._unary(self)


@dataclass(frozen=True)
class ExplainMany(Call[T]):
    """``explain_many``: ``run`` over one ``ExplainStream``."""

    run: ManyRun
    timeout: float | None

    def deadline(self, default: float | None) -> float | None:
        """The stream's deadline: ``timeout``, else ``default`` for each wave of items."""
        return self.timeout if self.timeout is not None else self.run.deadline(default)

    def result(self, stream_error: CamserveError | None) -> T:
        """The outcomes in input order (every one an ``Explanation`` when errors raise)."""
        return cast(T, self.run.finish(stream_error))

    def blocking(self, client: ExplainClient) -> T:
        return client._explain_many(self)

    def awaiting(self, client: AsyncExplainClient) -> Awaitable[T]:
        return client._explain_many(self)


@dataclass(frozen=True)
class JobEvents(Call[Generator[VisualizationEvent, None, None]]):
    """An optimisation job's stream of events; ``build`` makes the request (reading images).
    The asyncio client streams it through ``streaming``, not ``awaiting``."""

    build: Callable[[], jpb.VisualizeRequest]
    timeout: float | None

    def blocking(self, client: ExplainClient) -> Generator[VisualizationEvent, None, None]:
        return client._job_events(self)


@dataclass(frozen=True)
class JobResult(Call[VisualizationResult]):
    """An optimisation job run to its result, ``on_progress`` called with each step."""

    events: JobEvents
    on_progress: _visualize.ProgressCallback | None

    def blocking(self, client: ExplainClient) -> VisualizationResult:
        return _visualize.collect(client._job_events(self.events), self.on_progress)

    def awaiting(self, client: AsyncExplainClient) -> Awaitable[VisualizationResult]:
        return _visualize.acollect(client._job_events(self.events), self.on_progress)


@dataclass(frozen=True)
class Index(Call[IndexResult]):
    """``index``: ``run`` over as many ``IndexImages`` streams as it takes."""

    run: IndexRun
    timeout: float | None

    def blocking(self, client: ExplainClient) -> IndexResult:
        return client._index(self)

    def awaiting(self, client: AsyncExplainClient) -> Awaitable[IndexResult]:
        return client._index(self)


def _as_method(method: Method, spec: Callable[..., Any]) -> Method:
    """``method`` named and documented as ``spec``, with ``spec``'s parameters after self."""
    functools.update_wrapper(
        method, spec, assigned=("__module__", "__name__", "__qualname__", "__doc__")
    )
    parameters = inspect.signature(spec).parameters.values()
    own = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = inspect.Signature([own, *parameters])  # type: ignore[attr-defined]
    return method


def blocking(spec: Callable[P, Call[T]]) -> Callable[Concatenate[ExplainClient, P], T]:
    """``spec`` as a method of the blocking client."""

    def method(client: ExplainClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return spec(*args, **kwargs).blocking(client)

    return _as_method(method, spec)


def awaiting(
    spec: Callable[P, Call[T]],
) -> Callable[Concatenate[AsyncExplainClient, P], Coroutine[Any, Any, T]]:
    """``spec`` as a coroutine method of the asyncio client: arguments are checked when
    the coroutine runs."""

    async def method(client: AsyncExplainClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await spec(*args, **kwargs).awaiting(client)

    return _as_method(method, spec)


def streaming(
    spec: Callable[P, JobEvents],
) -> Callable[Concatenate[AsyncExplainClient, P], AsyncGenerator[VisualizationEvent, None]]:
    """``spec`` as a method of the asyncio client that returns an async generator of events."""

    def method(
        client: AsyncExplainClient, /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncGenerator[VisualizationEvent, None]:
        return client._job_events(spec(*args, **kwargs))

    return _as_method(method, spec)


__all__ = [
    "Call",
    "ExplainMany",
    "Index",
    "JobEvents",
    "JobResult",
    "Unary",
    "awaiting",
    "blocking",
    "streaming",
]
