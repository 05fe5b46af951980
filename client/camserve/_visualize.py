"""``visualize``'s plumbing shared by both clients: the checked request, and the stream
turned into progress events and one result.

Leaving the event iterator early (``break``, an exception, garbage collection)
cancels the call, and the server stops the job within one step.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Mapping,
)
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from camserve import jobs
from camserve._inputs import ImageInput, OptionValue, image_input, option_value
from camserve.errors import InternalError, InvalidArgumentError, from_rpc_error
from camserve.jobs import (
    JobMethodInfo,
    VisualizationEvent,
    VisualizationProgress,
    VisualizationResult,
)
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import jobs_pb2 as jpb

ProgressCallback = Callable[[VisualizationProgress], Any]
"""Called with each progress event; may return an awaitable in the asyncio client."""

MAX_INT32 = 2**31 - 1


def _index(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgumentError(f"{what} must be an integer, got {value!r}")
    if not 0 <= int(value) <= MAX_INT32:
        raise InvalidArgumentError(f"{what} must be in [0, {MAX_INT32}], got {value}")
    return int(value)


def _source(image: ImageInput | None, tensor: npt.ArrayLike | None) -> pb.ImageInput | None:
    if image is None and tensor is None:
        return None
    return image_input(image, tensor)


def visualize_request(
    *,
    method: str,
    model: str,
    image: ImageInput | None,
    tensor: npt.ArrayLike | None,
    target: int | None,
    layer: str | None,
    channel: int | None,
    options: Mapping[str, OptionValue] | None,
    style: ImageInput | None,
    seed: int,
    preview_every: int,
    top_k: int,
) -> jpb.VisualizeRequest:
    """A checked ``VisualizeRequest`` of ``visualize``'s arguments; images are read and
    encoded here."""
    if not isinstance(method, str) or not method:
        raise InvalidArgumentError("method is required (see job_methods())")
    if not isinstance(model, str) or not model:
        raise InvalidArgumentError("model is required")
    if layer is not None and not isinstance(layer, str):
        raise InvalidArgumentError(f"layer must be a string, got {type(layer).__name__}")
    seed_value = _index(seed, "seed")
    every = _index(preview_every, "preview_every")
    k = _index(top_k, "top_k")
    request = jpb.VisualizeRequest(
        model=model,
        method=method,
        layer=layer or "",
        options={name: option_value(name, v) for name, v in (options or {}).items()},
        seed=seed_value or 0,
        preview_every=every or 0,
        top_k=k or 0,
    )
    source = _source(image, tensor)
    if source is not None:
        request.input.CopyFrom(source)
    if style is not None:
        request.style.CopyFrom(_source(style, None) or pb.ImageInput())
    chosen_target = _index(target, "target")
    if chosen_target is not None:
        request.target = chosen_target
    chosen_channel = _index(channel, "channel")
    if chosen_channel is not None:
        request.channel = chosen_channel
    return request


def job_method_infos(reply: jpb.ListJobMethodsResponse) -> list[JobMethodInfo]:
    return [jobs.job_method_info(m) for m in reply.methods]


def iterate(call: Any) -> Generator[VisualizationEvent, None, None]:
    """The stream of a blocking call as events; the call is cancelled when the caller leaves."""
    try:
        for message in call:
            yield jobs.event(message)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None
    finally:
        call.cancel()


async def astream(
    build: Callable[[], jpb.VisualizeRequest], start: Callable[[jpb.VisualizeRequest], Any]
) -> AsyncGenerator[VisualizationEvent, None]:
    """An asyncio call as events: the request is built (images read and encoded) in a worker
    thread, then the call started; it is cancelled when the caller leaves."""
    request = await asyncio.to_thread(build)
    call = start(request)
    try:
        async for message in call:
            yield jobs.event(message)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None
    finally:
        call.cancel()


def collect(
    events: Iterable[VisualizationEvent], on_progress: ProgressCallback | None
) -> VisualizationResult:
    """Run the stream to its result, reporting progress; the stream is closed either way."""
    try:
        for item in events:
            if isinstance(item, VisualizationResult):
                return item
            if on_progress is not None:
                on_progress(item)
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
    raise InternalError("the job stream ended without a result")


async def acollect(
    events: AsyncIterator[VisualizationEvent], on_progress: ProgressCallback | None
) -> VisualizationResult:
    """``collect`` for the asyncio client; ``on_progress`` may be a coroutine function."""
    try:
        async for item in events:
            if isinstance(item, VisualizationResult):
                return item
            if on_progress is not None:
                outcome = on_progress(item)
                if inspect.isawaitable(outcome):
                    await outcome
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    raise InternalError("the job stream ended without a result")


__all__ = [
    "ProgressCallback",
    "acollect",
    "astream",
    "collect",
    "iterate",
    "job_method_infos",
    "visualize_request",
]
