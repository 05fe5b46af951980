"""Evaluations run as jobs: checked, admitted, run on a device worker, streamed.

An evaluation is checked completely before it is admitted (``plan``); it then takes one
of the server's job slots (shared with the optimisation jobs, ``--max-jobs``) and runs
unit by unit at background priority on one device worker (``runner``), so explanations
keep flowing. Cancelling the call stops it after the unit in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing

from ..config import Settings
from ..errors import InvalidArgument
from ..jobs.slots import JobSlots
from ..models.loading import LoadedModel, served_model
from ..runtime.workers import DeviceWorker
from .events import EvaluationEvent
from .pictures import kept_pictures, request_pictures
from .plan import EvaluationLimits, EvaluationPlan, check_query, plan_evaluation
from .query import EvaluationQuery
from .runner import EvaluationRun

KIND = "evaluate"  # the jobs metrics' method label of an evaluation

# A set's name and the most images to read to (the model that indexed it, each member's
# kept picture, in order); a larger set is refused before anything is read.
SetImages = Callable[[str, int], Awaitable[tuple[str, list[bytes]]]]


class EvaluationService:
    """Checks, admits and runs evaluations; yields progress, then the report."""

    def __init__(
        self,
        settings: Settings,
        models: Mapping[str, LoadedModel],
        pick_worker: Callable[[], DeviceWorker],
        slots: JobSlots,
        set_images: SetImages,
    ) -> None:
        self.settings = settings
        self.models = models
        self.pick_worker = pick_worker
        self.slots = slots
        self.set_images = set_images
        self.limits = EvaluationLimits(
            max_images=max(1, settings.max_evaluation_images),
            max_maps=max(1, settings.max_evaluation_maps),
        )

    async def run(self, query: EvaluationQuery) -> AsyncGenerator[EvaluationEvent, None]:
        """Progress after every unit of work, then the report."""
        started = time.perf_counter()
        loaded = served_model(self.models, query.model)
        plan = await self._plan(query, loaded)
        self.slots.acquire(loaded.name, KIND)
        outcome = "error"
        try:
            run = EvaluationRun(plan, self.pick_worker(), started)
            async with aclosing(run.events()) as events:
                async for event in events:
                    yield event
            outcome = "ok"
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            self.slots.release(loaded.name, KIND, outcome)

    async def _plan(self, query: EvaluationQuery, loaded: LoadedModel) -> EvaluationPlan:
        """Check what needs no image, read and decode the images, then plan."""
        if query.images and query.set_name:
            raise InvalidArgument("give images or a set, not both")
        kept: list[bytes] = []
        if query.set_name:
            indexed_by, kept = await self.set_images(query.set_name, self.limits.max_images)
            if indexed_by != loaded.name:
                raise InvalidArgument(
                    f"set {query.set_name!r} was indexed for model {indexed_by!r}: its kept "
                    f"pictures are that model's inputs, not {loaded.name!r}'s"
                )
        count = len(kept) or len(query.images)
        check_query(query, loaded, count)
        if count > self.limits.max_images:
            raise InvalidArgument(
                f"{count} images; the server evaluates at most {self.limits.max_images} at "
                "once (--max-evaluation-images)"
            )
        max_pixels = self.settings.max_image_pixels

        def decode_and_plan() -> EvaluationPlan:
            if kept:
                pictures = kept_pictures(loaded, kept, max_pixels)
            else:
                pictures = request_pictures(loaded, query.images, max_pixels)
            return plan_evaluation(query, loaded, pictures, self.limits)

        return await asyncio.get_running_loop().run_in_executor(None, decode_and_plan)
