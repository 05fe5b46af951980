"""The ``VisualizeService`` methods (optimisation jobs), for both clients (see ``_calls``)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy.typing as npt

from camserve import _visualize, jobs
from camserve._calls import EventStream, StreamResult, Unary
from camserve._inputs import ImageInput, OptionValue
from camserve._visualize import ProgressCallback
from camserve.jobs import JobMethodInfo, VisualizationEvent, VisualizationResult
from camserve.v1 import jobs_pb2 as jpb


def visualize_events(
    *,
    method: str,
    model: str,
    image: ImageInput | None = None,
    tensor: npt.ArrayLike | None = None,
    target: int | None = None,
    layer: str | None = None,
    channel: int | None = None,
    options: Mapping[str, OptionValue] | None = None,
    style: ImageInput | None = None,
    seed: int = 0,
    preview_every: int = 0,
    top_k: int = 0,
    timeout: float | None = None,
) -> EventStream[VisualizationEvent]:
    """Run an optimisation job; yields ``VisualizationProgress`` per step, then the
    ``VisualizationResult`` (the asyncio client: ``async for`` them). Leaving the loop
    early cancels the job. Arguments as ``visualize``."""
    build = functools.partial(
        _visualize.visualize_request,
        method=method,
        model=model,
        image=image,
        tensor=tensor,
        target=target,
        layer=layer,
        channel=channel,
        options=options,
        style=style,
        seed=seed,
        preview_every=preview_every,
        top_k=top_k,
    )
    return EventStream(lambda s: s.jobs.Visualize, build, jobs.event, timeout)


def visualize(
    *,
    method: str,
    model: str,
    image: ImageInput | None = None,
    tensor: npt.ArrayLike | None = None,
    target: int | None = None,
    layer: str | None = None,
    channel: int | None = None,
    options: Mapping[str, OptionValue] | None = None,
    on_progress: ProgressCallback | None = None,
    style: ImageInput | None = None,
    seed: int = 0,
    preview_every: int = 0,
    top_k: int = 0,
    timeout: float | None = None,
) -> StreamResult[VisualizationResult]:
    """Run an optimisation job (see ``job_methods()``) to its end.

    ``image`` (path, bytes, PIL image or uint8 array) or ``tensor`` (float32
    ``(3, H, W)``, normalised) is the starting or source image, when the method takes
    one; ``target`` a class, ``layer`` and ``channel`` a unit to visualise; ``options``
    the method's options (e.g. ``steps``, ``lr``, ``epsilon``); ``style`` the style
    image of style transfer. The same arguments and ``seed`` give the same picture.
    ``on_progress`` is called with each ``VisualizationProgress`` (with a preview
    every ``preview_every`` steps; in the asyncio client it may be a coroutine
    function). The deadline is ``timeout`` (default: the client's); when it passes,
    the server stops the job.
    """
    events = visualize_events(
        method=method,
        model=model,
        image=image,
        tensor=tensor,
        target=target,
        layer=layer,
        channel=channel,
        options=options,
        style=style,
        seed=seed,
        preview_every=preview_every,
        top_k=top_k,
        timeout=timeout,
    )
    return StreamResult(events, VisualizationResult, on_progress)


def job_methods(*, timeout: float | None = None) -> Unary[list[JobMethodInfo]]:
    """The optimisation job methods the server implements, with options and ranges."""
    return Unary(
        lambda s: s.jobs.ListJobMethods,
        jpb.ListJobMethodsRequest,
        _visualize.job_method_infos,
        timeout,
    )


__all__ = ["job_methods", "visualize", "visualize_events"]
