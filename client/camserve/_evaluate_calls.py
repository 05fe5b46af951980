"""The ``EvaluateService`` method, for both clients (see ``_calls``): ``evaluate`` runs an
evaluation of explanation methods to its report, ``evaluate_events`` streams it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy.typing as npt

from camserve import _evaluate_replies
from camserve._calls import EventStream, StreamResult
from camserve._evaluate_request import ImageBoxesInput, default_deadline, evaluate_request
from camserve._inputs import ImageInput, OptionValue
from camserve._progress import ProgressBar
from camserve.evaluation import Evaluation, EvaluationEvent, EvaluationProgress

EvaluationCallback = Callable[[EvaluationProgress], Any]
"""Called with each progress event; may return an awaitable in the asyncio client."""


class EvaluationBar:
    """A progress bar over an evaluation's maps (stderr: a live bar on a terminal, a line
    every few seconds in a log), sized by the first event's total."""

    def __init__(self, label: str = "evaluate") -> None:
        self.label = label
        self.bar: ProgressBar | None = None

    def __call__(self, event: EvaluationProgress) -> None:
        if self.bar is None:
            self.bar = ProgressBar(self.label, event.total, unit="map")
        self.bar(event.done)

    def close(self) -> None:
        """End the bar (once it has started)."""
        if self.bar is not None:
            self.bar.close()


def evaluate_events(
    *,
    model: str,
    methods: str | Sequence[str],
    images: Iterable[ImageInput] | None = None,
    tensors: Iterable[npt.ArrayLike] | npt.NDArray[Any] | None = None,
    set: str | None = None,
    targets: int | Sequence[int] | None = None,
    layer: str | None = None,
    metrics: str | Sequence[str] | None = None,
    faithfulness_steps: int = 0,
    faithfulness_percentile: int = 0,
    boxes: Sequence[ImageBoxesInput] | None = None,
    pointing_tolerance: int | None = None,
    sanity_check: bool = False,
    sanity_stages: int = 0,
    seed: int = 0,
    include_random: bool = True,
    method_options: Mapping[str, Mapping[str, OptionValue]] | None = None,
    timeout: float | None = None,
) -> EventStream[EvaluationEvent]:
    """Run an evaluation; yields ``EvaluationProgress`` as maps are computed, then the
    ``Evaluation`` (the asyncio client: ``async for`` them). Leaving the loop early
    cancels the evaluation on the server. Arguments as ``evaluate``."""
    build = functools.partial(
        evaluate_request,
        model=model,
        methods=methods,
        images=images,
        tensors=tensors,
        set=set,
        targets=targets,
        layer=layer,
        metrics=metrics,
        faithfulness_steps=faithfulness_steps,
        faithfulness_percentile=faithfulness_percentile,
        boxes=boxes,
        pointing_tolerance=pointing_tolerance,
        sanity_check=sanity_check,
        sanity_stages=sanity_stages,
        seed=seed,
        include_random=include_random,
        method_options=method_options,
    )
    return EventStream(
        lambda s: s.evaluate.Evaluate, build, _evaluate_replies.event, timeout, default_deadline
    )


def evaluate(
    *,
    model: str,
    methods: str | Sequence[str],
    images: Iterable[ImageInput] | None = None,
    tensors: Iterable[npt.ArrayLike] | npt.NDArray[Any] | None = None,
    set: str | None = None,
    targets: int | Sequence[int] | None = None,
    layer: str | None = None,
    metrics: str | Sequence[str] | None = None,
    faithfulness_steps: int = 0,
    faithfulness_percentile: int = 0,
    boxes: Sequence[ImageBoxesInput] | None = None,
    pointing_tolerance: int | None = None,
    sanity_check: bool = False,
    sanity_stages: int = 0,
    seed: int = 0,
    include_random: bool = True,
    method_options: Mapping[str, Mapping[str, OptionValue]] | None = None,
    progress: bool | EvaluationCallback | None = True,
    timeout: float | None = None,
) -> StreamResult[Evaluation]:
    """Score and rank explanation ``methods`` for ``model`` over many images: which map can
    I trust? Runs as a job on the server; returns the ``Evaluation``.

    The images are ``images`` (paths, bytes, PIL images or uint8 arrays; a floating-point
    array is a preprocessed tensor), ``tensors`` (float32 ``(3, H, W)`` arrays, or one
    ``(N, 3, H, W)`` array) or the members of the image set named ``set``. ``targets``
    gives each image's class (one per image, or one class for all; default: each image's
    top class); ``layer`` the layer of the layer-based methods (default: the model's).

    Each map is scored by the faithfulness ``metrics`` (default: every score; names as
    ``explain(faithfulness=...)``), with ``faithfulness_steps`` (deletion and insertion,
    [2, 256]) and ``faithfulness_percentile`` (ROAD, [1, 99]) at the server's 20 and 80
    when 0. ``boxes``, one list of ``(x0, y0, x1, y1)`` boxes per image in pixels of the
    image as sent (``[]`` or None: that image sits out), adds ``"pointing_game"``: the
    share of maps whose maximum lies within ``pointing_tolerance`` pixels (default 15) of
    a box. ``sanity_check`` re-initialises the model's parameterised layers from the
    output down, in ``sanity_stages`` steps (default 5, at most 16), and compares each
    method's maps with the original ones (Spearman rank correlation): a method fails
    when its maps barely change. ``include_random`` adds uniformly random maps as the
    method ``"random"``, the baseline to beat; ``seed`` fixes them and the
    re-initialised weights. ``method_options`` maps a method id to its options (see
    ``methods()``).

    ``progress``: True (default) draws a bar on stderr (a line every few seconds in a
    log); a callable is called with each ``EvaluationProgress`` (in the asyncio client
    it may be a coroutine function); False or None shows nothing. Interrupting the call
    (``KeyboardInterrupt``, a cancelled task) cancels the evaluation on the server. The
    deadline is ``timeout``, default the client's timeout for each image sent, times one
    plus the sanity stages with the check (a set counts as one image: give ``timeout``).
    """
    events = evaluate_events(
        model=model,
        methods=methods,
        images=images,
        tensors=tensors,
        set=set,
        targets=targets,
        layer=layer,
        metrics=metrics,
        faithfulness_steps=faithfulness_steps,
        faithfulness_percentile=faithfulness_percentile,
        boxes=boxes,
        pointing_tolerance=pointing_tolerance,
        sanity_check=sanity_check,
        sanity_stages=sanity_stages,
        seed=seed,
        include_random=include_random,
        method_options=method_options,
        timeout=timeout,
    )
    if progress is True:
        bar = EvaluationBar()
        return StreamResult(events, Evaluation, bar, bar.close)
    return StreamResult(events, Evaluation, progress or None)


__all__ = ["EvaluationBar", "EvaluationCallback", "evaluate", "evaluate_events"]
