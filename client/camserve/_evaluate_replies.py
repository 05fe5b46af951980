"""``Evaluate``'s stream messages as the SDK's types: progress events and the report.

A report that breaks the contract (a score with no ``MetricInfo``, a method twice, an
empty event) raises ``InternalError``: the SDK ranks by each score's direction, so it
does not guess one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from camserve.errors import InternalError
from camserve.evaluation import (
    Evaluation,
    EvaluationEvent,
    EvaluationProgress,
    MethodEvaluation,
    MetricInfo,
    SanityCheck,
    SanityStage,
    ScoreSummary,
    Values,
)
from camserve.results import from_fields
from camserve.v1 import evaluate_pb2 as epb


def _values(message: epb.ScoreSummary) -> Values:
    return np.asarray(list(message.values), dtype=np.float64)


def score_summary(message: epb.ScoreSummary) -> ScoreSummary:
    """A ``ScoreSummary`` message as a ``ScoreSummary``."""
    return ScoreSummary(mean=message.mean, std=message.std, values=_values(message))


def sanity_check(message: epb.SanityCheck) -> SanityCheck:
    """A ``SanityCheck`` message as a ``SanityCheck``."""
    stages = tuple(
        SanityStage(
            layer=stage.layer,
            layers_randomised=stage.layers_randomised,
            mean=stage.correlation.mean,
            std=stage.correlation.std,
            values=_values(stage.correlation),
        )
        for stage in message.stages
    )
    return SanityCheck(correlation=message.correlation, passed=message.passed, stages=stages)


def method_evaluation(message: epb.MethodEvaluation, order: Sequence[str] = ()) -> MethodEvaluation:
    """A ``MethodEvaluation`` message as a ``MethodEvaluation``, its scores in ``order``
    (the report's), any others after them by name."""
    names = [name for name in order if name in message.scores]
    names += sorted(set(message.scores) - set(names))
    return MethodEvaluation(
        method=message.method,
        scores={name: score_summary(message.scores[name]) for name in names},
        sanity=sanity_check(message.sanity) if message.HasField("sanity") else None,
        compute_ms=message.compute_ms,
    )


def _metrics(message: epb.EvaluateReport) -> dict[str, MetricInfo]:
    metrics = {m.name: from_fields(MetricInfo, m) for m in message.metrics}
    for method in message.methods:
        unknown = sorted(set(method.scores) - set(metrics))
        if unknown:
            raise InternalError(
                f"the server sent {method.method}'s score {', '.join(unknown)} "
                "without its MetricInfo"
            )
    return metrics


def evaluation(message: epb.EvaluateReport) -> Evaluation:
    """An ``EvaluateReport`` message as an ``Evaluation``."""
    metrics = _metrics(message)
    results = tuple(method_evaluation(m, list(metrics)) for m in message.methods)
    ids = [r.method for r in results]
    if len(set(ids)) != len(ids):
        raise InternalError(f"the server reported a method twice: {ids}")
    options = message.faithfulness_options
    return Evaluation(
        model=message.model,
        layer=message.layer,
        targets=tuple(message.targets),
        results=results,
        metrics=metrics,
        faithfulness_steps=options.steps,
        faithfulness_percentile=options.percentile,
        pointing_tolerance=message.pointing_tolerance,
        sanity_threshold=message.sanity_threshold,
        total_ms=message.total_ms,
    )


def progress(message: epb.EvaluateProgress) -> EvaluationProgress:
    """An ``EvaluateProgress`` message as an ``EvaluationProgress``."""
    return from_fields(EvaluationProgress, message)


def event(message: epb.EvaluateEvent) -> EvaluationEvent:
    """One message of the stream as progress or the report."""
    kind = message.WhichOneof("event")
    if kind == "progress":
        return progress(message.progress)
    if kind == "report":
        return evaluation(message.report)
    raise InternalError("the server sent an empty evaluation event")


__all__ = [
    "evaluation",
    "event",
    "method_evaluation",
    "progress",
    "sanity_check",
    "score_summary",
]
