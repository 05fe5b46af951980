"""One evaluation, run unit by unit on a device worker: a method on a chunk of images.

For each chunk: the images' classes (their top-1 when none was given), every method's
maps with their faithfulness scores and pointing-game hits, the random maps, then for
every stage of the cascade every method's maps on the randomised copy, correlated with
the chunk's original maps off the worker. Only one chunk's original maps are held at a
time. Progress follows every unit that made maps.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

from ..faithfulness.request import DEFAULT_PERCENTILE, DEFAULT_STEPS
from ..runtime.background import Models, background_step
from ..runtime.workers import DeviceWorker
from .correlation import spearman_rows
from .events import (
    EvaluationEvent,
    EvaluationProgress,
    EvaluationReport,
    MethodReport,
    SanityResult,
    SanityStage,
    Summary,
    Values,
)
from .metric_info import POINTING_GAME, metric_infos
from .plan import RANDOM, EvaluationPlan, MethodPlan
from .pointing import hits
from .units import ChunkMaps, SanityModel, explain_chunk, random_chunk, top_classes

SANITY_THRESHOLD = 0.5
T = TypeVar("T")


@dataclass
class _Tally:
    """One method's values so far: scores per image, sanity correlations per stage and
    image, and seconds of device time."""

    scores: dict[str, Values] = field(default_factory=dict)
    sanity: Values | None = None
    seconds: float = 0.0

    def record(self, name: str, start: int, values: Values, images: int) -> None:
        row = self.scores.setdefault(name, np.full(images, np.nan))
        row[start : start + len(values)] = values


class EvaluationRun:
    """Runs ``plan`` on ``worker``; ``events()`` yields progress, then the report."""

    def __init__(self, plan: EvaluationPlan, worker: DeviceWorker, started: float) -> None:
        self.plan = plan
        self.worker = worker
        self.started = started
        self.chunk = chunk_size(plan)
        self.tallies = {m.method.id: _Tally() for m in plan.methods}
        if plan.include_random:
            self.tallies[RANDOM] = _Tally()
        self.targets: list[int] = list(plan.targets or ())
        self.sanity: SanityModel | None = None
        self.done = 0
        self.total = plan.total_maps

    async def events(self) -> AsyncGenerator[EvaluationEvent, None]:
        plan = self.plan
        if plan.sanity_stages:
            self.sanity = await self._on_worker(self._sanity_model)
            stages = len(self.sanity.stages)  # fewer when the model has fewer layers
            self.total = plan.images * len(plan.methods) * (1 + stages)
            for method in plan.methods:
                self.tallies[method.method.id].sanity = np.full((stages, plan.images), np.nan)
        for start in range(0, plan.images, self.chunk):
            stop = min(start + self.chunk, plan.images)
            async for event in self._chunk(start, stop):
                yield event
        yield self._report()

    async def _chunk(self, start: int, stop: int) -> AsyncIterator[EvaluationProgress]:
        plan = self.plan
        x = plan.inputs[start:stop]
        if plan.targets is None:
            self.targets += await self._on_worker(functools.partial(self._top, x))
        targets = self.targets[start:stop]
        originals: dict[str, np.ndarray] = {}
        for method in plan.methods:
            run = functools.partial(self._explain, method, x, targets)
            got = await self._on_worker(run)
            self._record(method.method.id, start, got)
            originals[method.method.id] = got.maps
            yield self._progress("explain", method.method.id, stop - start)
        if plan.include_random:
            indices = range(start, stop)
            run = functools.partial(self._random, x, targets, indices)
            self._record(RANDOM, start, await self._on_worker(run))
        if self.sanity is None:
            return
        loop = asyncio.get_running_loop()
        for stage in range(len(self.sanity.stages)):
            for method in plan.methods:
                run = functools.partial(self._randomised, stage, method, x, targets)
                got = await self._on_worker(run)
                rho = await loop.run_in_executor(
                    None, spearman_rows, originals[method.method.id], got.maps
                )
                tally = self.tallies[method.method.id]
                assert tally.sanity is not None
                tally.sanity[stage, start:stop] = rho
                tally.seconds += got.seconds
                yield self._progress("sanity", method.method.id, stop - start)

    @property
    def name(self) -> str:
        return self.plan.loaded.name

    async def _on_worker(self, fn: Callable[[Models], T]) -> T:
        return await background_step(self.worker, fn)

    def _top(self, x: torch.Tensor, models: Models) -> list[int]:
        return top_classes(models[self.name], x)

    def _sanity_model(self, models: Models) -> SanityModel:
        plan = self.plan
        return SanityModel.of(models[self.name], plan.sanity_stages, plan.seed, plan.inputs[:1])

    def _explain(
        self, method: MethodPlan, x: torch.Tensor, targets: list[int], models: Models
    ) -> ChunkMaps:
        return explain_chunk(models[self.name], method, x, targets, self.plan.faithfulness)

    def _random(
        self, x: torch.Tensor, targets: list[int], indices: range, models: Models
    ) -> ChunkMaps:
        plan = self.plan
        model = models[self.name]
        return random_chunk(model, x, targets, indices, plan.seed, plan.faithfulness)

    def _randomised(
        self, stage: int, method: MethodPlan, x: torch.Tensor, targets: list[int], _: Models
    ) -> ChunkMaps:
        assert self.sanity is not None
        return explain_chunk(self.sanity.at(stage), method, x, targets, None)

    def _record(self, method: str, start: int, got: ChunkMaps) -> None:
        plan = self.plan
        tally = self.tallies[method]
        tally.seconds += got.seconds
        for name, values in got.scores.items():
            tally.record(name, start, values, plan.images)
        if plan.boxes is not None:
            pointed = [
                hits(got.maps[i], plan.boxes[start + i], plan.tolerance)
                for i in range(got.maps.shape[0])
            ]
            tally.record(POINTING_GAME, start, np.asarray(pointed), plan.images)

    def _progress(self, stage: str, method: str, maps: int) -> EvaluationProgress:
        self.done += maps
        return EvaluationProgress(
            stage=stage,
            method=method,
            done=self.done,
            total=self.total,
            elapsed_s=time.perf_counter() - self.started,
        )

    def _report(self) -> EvaluationReport:
        plan = self.plan
        faithfulness = plan.faithfulness
        names = faithfulness.scores if faithfulness is not None else ()
        infos = metric_infos(names, plan.boxes is not None)
        methods = []
        for method, tally in self.tallies.items():
            scores = {
                info.name: Summary(tally.scores.get(info.name, np.full(plan.images, np.nan)))
                for info in infos
            }
            methods.append(MethodReport(method, scores, self._sanity(tally), tally.seconds))
        return EvaluationReport(
            model=self.name,
            layer=plan.layer,
            targets=tuple(self.targets),
            methods=tuple(methods),
            metrics=infos,
            faithfulness_steps=faithfulness.steps if faithfulness else DEFAULT_STEPS,
            faithfulness_percentile=faithfulness.percentile if faithfulness else DEFAULT_PERCENTILE,
            pointing_tolerance=plan.tolerance,
            sanity_threshold=SANITY_THRESHOLD,
            total_s=time.perf_counter() - self.started,
        )

    def _sanity(self, tally: _Tally) -> SanityResult | None:
        if tally.sanity is None or self.sanity is None:
            return None
        stages = tuple(
            SanityStage(stage.lowest, len(stage.layers), Summary(tally.sanity[k]))
            for k, stage in enumerate(self.sanity.stages)
        )
        return SanityResult(stages=stages, threshold=SANITY_THRESHOLD)


def chunk_size(plan: EvaluationPlan) -> int:
    """Images per unit: few when a method is heavy (a unit is the cancellation grain)."""
    return 2 if any(m.method.heavy for m in plan.methods) else 8
