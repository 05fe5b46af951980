"""``EvaluateService`` RPCs: protobuf to an evaluation query and events back, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import numpy as np
from grpc import aio

from camserve.v1 import evaluate_pb2 as epb
from camserve.v1 import evaluate_pb2_grpc
from camserve.v1 import explain_pb2 as pb

from ..rpc.messages import image_source, option_values
from .events import EvaluationEvent, EvaluationProgress, EvaluationReport, SanityResult, Summary
from .query import EvaluationQuery
from .service import EvaluationService


def to_query(request: epb.EvaluateRequest) -> EvaluationQuery:
    """An ``EvaluateRequest`` as a domain query."""
    return EvaluationQuery(
        model=request.model,
        methods=tuple(request.methods),
        images=tuple(image_source(image) for image in request.images),
        set_name=request.set,
        targets=tuple(request.targets),
        layer=request.layer or None,
        metrics=tuple(request.metrics),
        faithfulness_steps=request.faithfulness_options.steps,
        faithfulness_percentile=request.faithfulness_options.percentile,
        boxes=tuple(
            tuple((b.x0, b.y0, b.x1, b.y1) for b in image.boxes) for image in request.boxes
        ),
        pointing_tolerance=(
            request.pointing_tolerance if request.HasField("pointing_tolerance") else None
        ),
        sanity_check=request.sanity_check,
        sanity_stages=request.sanity_stages,
        seed=request.seed,
        include_random=request.include_random,
        method_options={
            method: option_values(options.options)
            for method, options in request.method_options.items()
        },
    )


def _summary(summary: Summary) -> epb.ScoreSummary:
    values = summary.values.astype(np.float64)
    return epb.ScoreSummary(mean=summary.mean, std=summary.std, values=values.tolist())


def _sanity(sanity: SanityResult) -> epb.SanityCheck:
    return epb.SanityCheck(
        correlation=sanity.correlation,
        passed=sanity.passed,
        stages=[
            epb.SanityStage(
                layer=stage.layer,
                layers_randomised=stage.layers_randomised,
                correlation=_summary(stage.correlation),
            )
            for stage in sanity.stages
        ],
    )


def _report(report: EvaluationReport) -> epb.EvaluateReport:
    methods = []
    for method in report.methods:
        message = epb.MethodEvaluation(
            method=method.method,
            scores={name: _summary(summary) for name, summary in method.scores.items()},
            compute_ms=method.compute_s * 1e3,
        )
        if method.sanity is not None:
            message.sanity.CopyFrom(_sanity(method.sanity))
        methods.append(message)
    return epb.EvaluateReport(
        model=report.model,
        layer=report.layer,
        targets=report.targets,
        methods=methods,
        metrics=[
            epb.MetricInfo(
                name=info.name,
                higher_is_better=info.higher_is_better,
                description=info.description,
            )
            for info in report.metrics
        ],
        faithfulness_options=pb.FaithfulnessOptions(
            steps=report.faithfulness_steps, percentile=report.faithfulness_percentile
        ),
        pointing_tolerance=report.pointing_tolerance,
        sanity_threshold=report.sanity_threshold,
        total_ms=report.total_s * 1e3,
    )


def to_event(event: EvaluationEvent) -> epb.EvaluateEvent:
    """A domain event as an ``EvaluateEvent``."""
    if isinstance(event, EvaluationProgress):
        return epb.EvaluateEvent(
            progress=epb.EvaluateProgress(
                stage=event.stage,
                method=event.method,
                done=event.done,
                total=event.total,
                elapsed_ms=event.elapsed_s * 1e3,
            )
        )
    return epb.EvaluateEvent(report=_report(event))


class EvaluateServicer(evaluate_pb2_grpc.EvaluateServiceServicer):  # type: ignore[misc,unused-ignore]
    """The RPC surface of ``EvaluationService``: protobuf to domain objects and back."""

    def __init__(self, service: EvaluationService) -> None:
        self.service = service

    async def Evaluate(  # noqa: N802 (the RPC's name)
        self, request: epb.EvaluateRequest, context: aio.ServicerContext
    ) -> AsyncIterator[epb.EvaluateEvent]:
        async with aclosing(self.service.run(to_query(request))) as events:
            async for event in events:
                yield to_event(event)
