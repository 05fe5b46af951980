"""``visualize``'s plumbing shared by both clients: the checked request, and the stream's
messages as progress events and one result (run by ``camserve._streams``).

Leaving the event iterator early (``break``, an exception, garbage collection)
cancels the call, and the server stops the job within one step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from camserve import jobs
from camserve._inputs import ImageInput, OptionValue, image_input, option_value
from camserve.errors import InvalidArgumentError
from camserve.jobs import JobMethodInfo, VisualizationProgress
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


__all__ = [
    "ProgressCallback",
    "job_method_infos",
    "visualize_request",
]
