"""Client methods written once for both clients, as functions that return a ``Call``.

A ``Call`` is what one method call does apart from how the client waits: which RPC,
the request (built when the call runs, so the asyncio client can build one that reads
files in a worker thread), and how the reply becomes the result. ``_explain_calls``,
``_job_calls``, ``_evaluate_calls`` and ``_set_calls`` write each method as a function of
its arguments that returns a ``Call``; ``blocking``, ``awaiting`` and ``streaming`` make
that function a method of ``ExplainClient`` or ``AsyncExplainClient``, with its signature
and docstring; the client runs the ``Call`` (``_unary``, ``_explain_many``, ``_events``,
``_index``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast

from camserve import _streams
from camserve._streams import ProgressCallback
from camserve.sets import IndexResult

if TYPE_CHECKING:
    from camserve._connection import Stubs
    from camserve._many import ManyRun
    from camserve._sets import IndexRun
    from camserve.async_client import AsyncExplainClient
    from camserve.client import ExplainClient
    from camserve.errors import CamserveError

P = ParamSpec("P")
T = TypeVar("T")
E = TypeVar("E")
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
class EventStream(Call[Generator[E, None, None]], Generic[E]):
    """A job's stream of events (``visualize_events``, ``evaluate_events``): ``rpc`` picks the
    stub's server-streaming method, ``build`` makes the request (reading images) and
    ``parse`` turns each message into an event. The asyncio client streams it through
    ``streaming``, not ``awaiting``.

    The call's deadline is ``timeout``; when that is None, ``default_deadline(request,
    client_timeout)`` where given (a deadline that grows with the work asked), else the
    client's timeout.
    """

    rpc: Callable[[Stubs], Any]
    build: Callable[[], Any]
    parse: Callable[[Any], E]
    timeout: float | None
    default_deadline: Callable[[Any, float | None], float | None] | None = None

    def deadline(self, request: Any, client_timeout: float | None) -> float | None:
        """The deadline of the call that sends ``request`` (None: the client's timeout)."""
        if self.timeout is not None or self.default_deadline is None:
            return self.timeout
        return self.default_deadline(request, client_timeout)

    def blocking(self, client: ExplainClient) -> Generator[E, None, None]:
        return client._events(self)


@dataclass(frozen=True)
class StreamResult(Call[T]):
    """A job's stream run to its result, an instance of ``result``; every other event is
    passed to ``on_progress`` (in the asyncio client it may be a coroutine function).
    ``finish`` runs when the stream ends, however it ends (it closes a progress bar)."""

    events: EventStream[Any]
    result: type[T]
    on_progress: ProgressCallback | None
    finish: Callable[[], None] | None = None

    def blocking(self, client: ExplainClient) -> T:
        try:
            return _streams.collect(client._events(self.events), self.result, self.on_progress)
        finally:
            if self.finish is not None:
                self.finish()

    async def _awaited(self, client: AsyncExplainClient) -> T:
        try:
            return await _streams.acollect(
                client._events(self.events), self.result, self.on_progress
            )
        finally:
            if self.finish is not None:
                self.finish()

    def awaiting(self, client: AsyncExplainClient) -> Awaitable[T]:
        return self._awaited(client)


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
    spec: Callable[P, EventStream[E]],
) -> Callable[Concatenate[AsyncExplainClient, P], AsyncGenerator[E, None]]:
    """``spec`` as a method of the asyncio client that returns an async generator of events."""

    def method(
        client: AsyncExplainClient, /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncGenerator[E, None]:
        return client._events(spec(*args, **kwargs))

    return _as_method(method, spec)


__all__ = [
    "Call",
    "EventStream",
    "ExplainMany",
    "Index",
    "StreamResult",
    "Unary",
    "awaiting",
    "blocking",
    "streaming",
]
