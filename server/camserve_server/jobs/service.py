"""Run optimisation jobs on the device workers, one step at a time, streaming progress.

A job is admitted when fewer than ``max_jobs`` jobs and evaluations run
(``slots.JobSlots``); beyond, it is refused at once with RESOURCE_EXHAUSTED. Each step runs on
a device worker with ``Priority.BACKGROUND``, so explanation batches take the
device between steps. Cancelling the call (or its deadline passing) stops the
job at the next step boundary: the step in flight finishes, no further step
starts, and the job's slot is free when the call ends. Finished jobs are kept
in a bounded in-memory cache keyed by (model and weights, method, options,
seed, target, layer, channel, input hashes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ..answers import ClassScore
from ..config import Settings
from ..errors import InvalidArgument
from ..models.loading import LoadedModel, served_model
from ..query import ImageSource
from ..runtime.background import Models, background_step
from ..runtime.metrics import Metrics
from ..runtime.workers import DeviceWorker
from .base import Job, JobMethod, JobOutcome, JobRequest, Normalisation, StepEvent
from .display import preview_rgb, to_rgb
from .events import (
    DEFAULT_TOP_K,
    MAX_PREVIEW_EVERY,
    JobEvent,
    JobPicture,
    JobQuery,
    ProgressEvent,
    ResultEvent,
)
from .registry import JOB_METHODS, get_job_method
from .result_cache import FinishedJob, ResultCache, job_key
from .slots import JobSlots

MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class _Prepared:
    """A validated request (tensors on the CPU), its cache key and normalisation."""

    request: JobRequest
    key: str
    normalisation: Normalisation


@dataclass(frozen=True)
class _Stepped:
    event: StepEvent
    preview: torch.Tensor | None
    seconds: float


class JobService:
    """Validates, admits, runs and caches jobs; yields ``ProgressEvent`` then ``ResultEvent``."""

    def __init__(
        self,
        settings: Settings,
        models: Mapping[str, LoadedModel],
        pick_worker: Callable[[], DeviceWorker],
        metrics: Metrics,
        slots: JobSlots,
    ) -> None:
        self.settings = settings
        self.models = models
        self.pick_worker = pick_worker
        self.metrics = metrics
        self.slots = slots
        self.max_jobs = slots.limit
        self.max_steps = max(1, settings.max_job_steps)
        self.cache = ResultCache(settings.job_cache_bytes)

    @staticmethod
    def methods() -> list[JobMethod]:
        """Every registered job method, in registry order."""
        return list(JOB_METHODS.values())

    async def run(self, query: JobQuery) -> AsyncGenerator[JobEvent, None]:
        """Progress events as the job goes, then its result (the only event on a cache hit)."""
        started = time.perf_counter()
        loaded = self._model(query.model)
        method = self._method(query.method)
        _check_query(query, loaded)
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(None, self._prepare, loaded, method, query)
        hit = self.cache.get(prepared.key)
        if hit is not None:
            self.metrics.jobs.labels(loaded.name, method.id, "cached").inc()
            yield await loop.run_in_executor(
                None, self._result, loaded, method, query, prepared, hit, True, 0.0
            )
            return
        self.slots.acquire(loaded.name, method.id)
        outcome = "error"
        try:
            finished: FinishedJob | None = None
            async for event in self._execute(loaded, method, query, prepared, started):
                if isinstance(event, FinishedJob):
                    finished = event
                else:
                    yield event
            assert finished is not None
            self.cache.put(prepared.key, finished)
            elapsed = time.perf_counter() - started
            result = await loop.run_in_executor(
                None, self._result, loaded, method, query, prepared, finished, False, elapsed
            )
            outcome = "ok"
            yield result
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            self.slots.release(loaded.name, method.id, outcome)

    async def _execute(
        self,
        loaded: LoadedModel,
        method: JobMethod,
        query: JobQuery,
        prepared: _Prepared,
        started: float,
    ) -> AsyncIterator[ProgressEvent | FinishedJob]:
        """Create the job on a worker, step it to the end, and yield progress then its outcome."""
        worker = self.pick_worker()
        name = loaded.name
        request = prepared.request

        def create(models: Models) -> Job:
            model = models[name]
            return method.create(model, _on_device(request, model.device))

        job = await background_step(worker, create)
        total = int(job.total_steps)
        if total > self.max_steps:
            raise InvalidArgument(
                f"this job would run {total} steps; the server's budget is {self.max_steps} "
                f"steps per job (--max-job-steps): lower steps (or octaves)"
            )
        every = query.preview_every
        step_seconds = self.metrics.job_step.labels(name, method.id)
        for _ in range(total):
            stepped = await background_step(worker, lambda _models: _step(job, every))
            step_seconds.observe(stepped.seconds)
            event = stepped.event
            preview = None
            if stepped.preview is not None:
                rgb = preview_rgb(stepped.preview, prepared.normalisation)
                preview = JobPicture(name="preview", tensor=None, rgb=rgb)
            yield ProgressEvent(
                step=event.step,
                total=event.total,
                loss=float(event.loss),
                objective=float(event.objective),
                elapsed_s=time.perf_counter() - started,
                preview=preview,
            )
            if event.done or event.step >= event.total:
                break
        outcome = await background_step(worker, lambda _models: job.outcome())
        yield _finished(outcome, request.layer or "")

    def _model(self, name: str) -> LoadedModel:
        loaded = served_model(self.models, name)
        if not loaded.primary.layer_access:
            raise InvalidArgument(
                f"model {loaded.name!r} is {loaded.format}: job methods need a model whose "
                "layers and gradients camserve can reach (format torch)"
            )
        return loaded

    @staticmethod
    def _method(method_id: str) -> JobMethod:
        return get_job_method(method_id)

    def _prepare(self, loaded: LoadedModel, method: JobMethod, query: JobQuery) -> _Prepared:
        """Decode the images (size limits as for explanations), validate, check the budget."""
        normalisation = Normalisation.from_preprocess(loaded.preprocess)
        image = self._tensor(loaded, query.image, "image")
        style = self._tensor(loaded, query.style, "style")
        request = JobRequest(
            method=method.id,
            image=image,
            target=query.target,
            layer=query.layer,
            channel=query.channel,
            options=dict(query.options),
            seed=query.seed,
            style=style,
            normalisation=normalisation,
        )
        checked = method.validate(loaded.primary, request)
        steps = checked.options.get("steps")
        if isinstance(steps, int) and steps > self.max_steps:
            raise InvalidArgument(
                f"option steps must be in [1, {self.max_steps}] (the server's step budget, "
                f"--max-job-steps), got {steps}"
            )
        key = job_key(
            {
                "model": loaded.name,
                "weights": loaded.weights_digest,
                "method": method.id,
                "options": tuple(sorted(checked.options.items())),
                "seed": checked.seed,
                "target": checked.target,
                "layer": checked.layer,
                "channel": checked.channel,
                "image": _source_hash(loaded, query.image),
                "style": _source_hash(loaded, query.style) if method.id == "style_transfer" else "",
            }
        )
        return _Prepared(request=checked, key=key, normalisation=normalisation)

    def _tensor(
        self, loaded: LoadedModel, source: ImageSource | None, what: str
    ) -> torch.Tensor | None:
        if source is None:
            return None
        missing = f"the {what} is empty: give encoded bytes or a tensor"
        tensor, _ = source.model_input(loaded, self.settings.max_image_pixels, missing)
        return tensor

    @staticmethod
    def _result(
        loaded: LoadedModel,
        method: JobMethod,
        query: JobQuery,
        prepared: _Prepared,
        finished: FinishedJob,
        cached: bool,
        elapsed: float,
    ) -> ResultEvent:
        norm = prepared.normalisation
        k = query.top_k or min(DEFAULT_TOP_K, finished.logits.size)

        def picture(name: str, tensor: np.ndarray[Any, np.dtype[np.float32]]) -> JobPicture:
            return JobPicture(name=name, tensor=tensor, rgb=to_rgb(torch.from_numpy(tensor), norm))

        return ResultEvent(
            model=loaded.name,
            method=method.id,
            layer=finished.layer,
            image=picture("result", finished.tensor),
            images=[picture(name, t) for name, t in finished.images.items()],
            top_classes=_top(finished.logits, k, loaded.labels),
            predictions={
                name: _top(logits, k, loaded.labels)
                for name, logits in finished.extra_logits.items()
            },
            trace=list(finished.trace),
            steps=len(finished.trace),
            cached=cached,
            seed=query.seed,
            total_s=elapsed,
        )


def _step(job: Job, preview_every: int) -> _Stepped:
    """One step, and the current image when a preview is due (every N steps and the last)."""
    started = time.perf_counter()
    event = job.step()
    seconds = time.perf_counter() - started
    due = preview_every > 0 and (
        event.step % preview_every == 0 or event.done or event.step >= event.total
    )
    return _Stepped(
        event=event, preview=job.preview().detach().cpu() if due else None, seconds=seconds
    )


def _on_device(request: JobRequest, device: torch.device) -> JobRequest:
    image = request.image.to(device) if request.image is not None else None
    style = request.style.to(device) if request.style is not None else None
    return replace(request, image=image, style=style)


def _numpy(tensor: torch.Tensor) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.ascontiguousarray(tensor.detach().float().cpu().numpy(), dtype=np.float32)


def _finished(outcome: JobOutcome, layer: str) -> FinishedJob:
    return FinishedJob(
        tensor=_numpy(outcome.tensor),
        images={name: _numpy(t) for name, t in outcome.images.items()},
        trace=tuple(float(v) for v in outcome.trace),
        logits=_numpy(outcome.logits).reshape(-1),
        extra_logits={name: _numpy(t).reshape(-1) for name, t in outcome.extra_logits.items()},
        layer=layer,
    )


def _top(
    logits: np.ndarray[Any, np.dtype[np.float32]], k: int, labels: list[str] | None
) -> list[ClassScore]:
    shifted = logits.astype(np.float64) - float(logits.max())
    probabilities = np.exp(shifted) / np.exp(shifted).sum()
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        ClassScore(
            index=int(i),
            label=labels[int(i)] if labels else "",
            probability=float(probabilities[i]),
            logit=float(logits[i]),
        )
        for i in order
    ]


def _source_hash(loaded: LoadedModel, source: ImageSource | None) -> str:
    if source is None or (source.encoded is None and source.tensor is None):
        return ""
    preprocess, digest = source.content_key(loaded)
    return f"{preprocess}:{digest}"


def _check_query(query: JobQuery, loaded: LoadedModel) -> None:
    """What the service checks itself; the method checks its own options, layer and channel."""
    if not 0 <= query.preview_every <= MAX_PREVIEW_EVERY:
        raise InvalidArgument(
            f"preview_every must be in [0, {MAX_PREVIEW_EVERY}], got {query.preview_every}"
        )
    classes = loaded.primary.num_classes
    if not 0 <= query.top_k <= classes:
        raise InvalidArgument(f"top_k must be in [0, {classes}], got {query.top_k}")
    if not 0 <= query.seed <= MAX_SEED:
        raise InvalidArgument(f"seed must be in [0, 2^63 - 1], got {query.seed}")
