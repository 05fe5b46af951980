"""Run a job to its end in the calling thread: for tests, tools and in-process use.

The service steps jobs itself (interleaved with explanation batches, cancellable);
this is the plain loop, with a hook per step.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import Job, JobOutcome, StepEvent


def run_job(
    job: Job, on_step: Callable[[StepEvent], None] | None = None
) -> tuple[JobOutcome, list[StepEvent]]:
    """Step ``job`` until it reports ``done``; its outcome and every step's event."""
    events: list[StepEvent] = []
    while True:
        event = job.step()
        events.append(event)
        if on_step is not None:
            on_step(event)
        if event.done:
            return job.outcome(), events
