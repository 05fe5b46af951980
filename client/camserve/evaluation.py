"""What ``evaluate`` returns: explanation methods scored and ranked for one model.

``Evaluation.scores[method][metric]`` is a score's mean over the images (NaN when no
image has a value, e.g. the pointing game without boxes); ``summary(method, metric)``
gives its standard deviation and per-image values beside it. ``ranking(metric)`` orders
the methods best first by the score's direction (``metrics[name].higher_is_better``),
NaN last. The ``"random"`` row, when asked, scores uniformly random maps: a method
that ranks below it explains nothing about the model.

With the sanity check, ``sanity[method]`` is the Spearman rank correlation between the
method's maps for the model and for the same model with every parameterised layer
re-initialised (cascading from the output down; ``sanity_curves`` holds every stage). A
method passes when it is below ``sanity_threshold``: maps that barely change when the
weights are random do not show what the model learned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from camserve import _reprs

RANDOM: Final = "random"
"""The method id of the random-map baseline (``evaluate(include_random=True)``)."""

Values = npt.NDArray[np.float64]


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _listed(values: Values) -> list[float | None]:
    return [_finite_or_none(float(v)) for v in values]


@dataclass(frozen=True)
class ScoreSummary:
    """A score over the images: ``mean`` and ``std`` (population) over the images that have
    a value, and ``values``, float64, one per image in the request's order (NaN where an
    image has none)."""

    mean: float
    std: float
    values: Values = field(default_factory=lambda: np.zeros(0, np.float64))

    @property
    def count(self) -> int:
        """How many images have a value."""
        return int(np.count_nonzero(~np.isnan(self.values)))

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values (NaN as None)."""
        return {
            "mean": _finite_or_none(self.mean),
            "std": _finite_or_none(self.std),
            "values": _listed(self.values),
        }

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)


@dataclass(frozen=True)
class SanityStage:
    """One stage of the cascading randomisation: ``layers_randomised`` parameterised layers
    re-initialised from the output down to ``layer``, and the Spearman correlation of the
    maps with the original ones (``mean``, ``std`` over the images, ``values`` per image)."""

    layer: str
    layers_randomised: int
    mean: float
    std: float
    values: Values = field(default_factory=lambda: np.zeros(0, np.float64))

    def to_dict(self) -> dict[str, Any]:
        """The stage as JSON-ready values (NaN as None)."""
        return {
            "layer": self.layer,
            "layers_randomised": self.layers_randomised,
            "mean": _finite_or_none(self.mean),
            "std": _finite_or_none(self.std),
            "values": _listed(self.values),
        }

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)


@dataclass(frozen=True)
class SanityCheck:
    """A method's sanity check: ``correlation`` at the last stage (every parameterised layer
    re-initialised), ``passed`` when it is below the report's threshold, and the curve."""

    correlation: float
    passed: bool
    stages: tuple[SanityStage, ...] = ()

    @property
    def verdict(self) -> str:
        """One line: whether the maps depend on what the model learned."""
        if self.passed:
            return "passes: the maps change when the weights are random"
        return "fails: maps barely change when the weights are random"

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON-ready values (NaN as None)."""
        return {
            "correlation": _finite_or_none(self.correlation),
            "passed": self.passed,
            "stages": [stage.to_dict() for stage in self.stages],
        }

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)


@dataclass(frozen=True)
class MethodEvaluation:
    """One method's results: each score by name, the sanity check (None when not run, and
    for ``"random"``), and the server's time on its maps and scores."""

    method: str
    scores: Mapping[str, ScoreSummary]
    sanity: SanityCheck | None = None
    compute_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The method's results as JSON-ready values (NaN as None)."""
        return {
            "method": self.method,
            "scores": {name: summary.to_dict() for name, summary in self.scores.items()},
            "sanity": None if self.sanity is None else self.sanity.to_dict(),
            "compute_ms": self.compute_ms,
        }

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)


@dataclass(frozen=True)
class MetricInfo:
    """What a score means: its direction and one line on what it measures."""

    name: str
    higher_is_better: bool
    description: str = ""

    @property
    def arrow(self) -> str:
        """``↑`` when higher is better, else ``↓``."""
        return "↑" if self.higher_is_better else "↓"

    @property
    def direction(self) -> str:
        """``higher is better`` or ``lower is better``."""
        return "higher is better" if self.higher_is_better else "lower is better"

    def to_dict(self) -> dict[str, Any]:
        """The score's meaning as JSON-ready values."""
        return {
            "name": self.name,
            "higher_is_better": self.higher_is_better,
            "description": self.description,
        }


@dataclass(frozen=True)
class EvaluationProgress:
    """Maps computed so far: ``done`` of ``total`` (images x methods, times one plus the
    sanity stages with the check), the ``stage`` ("explain" or "sanity") and the
    ``method`` of the unit just done, and the time since the evaluation started."""

    stage: str
    method: str
    done: int
    total: int
    elapsed_ms: float

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)


def _sort_key(value: float, higher_is_better: bool) -> tuple[bool, float]:
    """Best first, NaN last."""
    if math.isnan(value):
        return (True, 0.0)
    return (False, -value if higher_is_better else value)


@dataclass(frozen=True)
class Evaluation:
    """A finished evaluation of explanation methods on one model (see the module).

    ``results`` holds each method's ``MethodEvaluation`` in the request's order
    (``"random"`` last); ``metrics`` each score's ``MetricInfo`` in the report's order;
    ``targets`` the class each image was evaluated for. The settings the server used are
    beside them: ``faithfulness_steps`` and ``faithfulness_percentile`` (deletion and
    insertion steps, ROAD's percentile), ``pointing_tolerance`` (pixels of the model's
    input) and ``sanity_threshold``.
    """

    model: str
    layer: str
    targets: tuple[int, ...]
    results: tuple[MethodEvaluation, ...]
    metrics: Mapping[str, MetricInfo]
    faithfulness_steps: int = 0
    faithfulness_percentile: int = 0
    pointing_tolerance: int = 0
    sanity_threshold: float = 0.0
    total_ms: float = 0.0

    @property
    def methods(self) -> list[str]:
        """The methods' ids, in the request's order (``"random"`` last)."""
        return [r.method for r in self.results]

    @property
    def images(self) -> int:
        """How many images were evaluated (one target each; else one value each)."""
        if self.targets:
            return len(self.targets)
        counts = [s.values.size for r in self.results for s in r.scores.values()]
        return max(counts, default=0)

    def result(self, method: str) -> MethodEvaluation:
        """One method's results; KeyError naming the evaluated methods when absent."""
        for r in self.results:
            if r.method == method:
                return r
        raise KeyError(f"no method {method!r} in this evaluation; its methods: {self.methods}")

    def metric(self, name: str) -> MetricInfo:
        """One score's meaning; KeyError naming the report's scores when absent."""
        if name not in self.metrics:
            raise KeyError(
                f"no score {name!r} in this evaluation; its scores: {list(self.metrics)}"
            )
        return self.metrics[name]

    @property
    def scores(self) -> dict[str, dict[str, float]]:
        """Each method's mean of each score: ``scores[method][metric]`` (NaN where missing)."""
        return {
            r.method: {
                name: r.scores[name].mean if name in r.scores else math.nan for name in self.metrics
            }
            for r in self.results
        }

    def summary(self, method: str, metric: str) -> ScoreSummary:
        """A method's score with its spread and per-image values."""
        scores = self.result(method).scores
        if metric not in scores:
            raise KeyError(f"{method} has no score {metric!r}; its scores: {list(scores)}")
        return scores[metric]

    @property
    def sanity(self) -> dict[str, float]:
        """The final-stage sanity correlation of each method checked."""
        return {r.method: r.sanity.correlation for r in self.results if r.sanity is not None}

    @property
    def sanity_passed(self) -> dict[str, bool]:
        """Whether each method checked passed the sanity check."""
        return {r.method: r.sanity.passed for r in self.results if r.sanity is not None}

    @property
    def sanity_curves(self) -> dict[str, list[SanityStage]]:
        """Each checked method's stages, from the output down."""
        return {r.method: list(r.sanity.stages) for r in self.results if r.sanity is not None}

    def _mean(self, method: MethodEvaluation, metric: str) -> float:
        summary = method.scores.get(metric)
        return math.nan if summary is None else float(summary.mean)

    def ranking(self, metric: str | None = None) -> list[str]:
        """The methods best first by ``metric``'s mean in its direction, NaN last, ties in
        the request's order; without ``metric``, by ``mean_ranks()``."""
        if metric is None:
            ranks = self.mean_ranks()
            return sorted(self.methods, key=lambda method: _sort_key(ranks[method], False))
        info = self.metric(metric)
        return [
            r.method
            for r in sorted(
                self.results,
                key=lambda r: _sort_key(self._mean(r, metric), info.higher_is_better),
            )
        ]

    def rank(self, method: str, metric: str) -> int:
        """``method``'s place by ``metric``, from 1: one more than the methods strictly
        better; a NaN mean comes after every number (equal NaNs share a place)."""
        info = self.metric(metric)
        own = _sort_key(self._mean(self.result(method), metric), info.higher_is_better)
        better = [
            r for r in self.results if _sort_key(self._mean(r, metric), info.higher_is_better) < own
        ]
        return 1 + len(better)

    def mean_ranks(self) -> dict[str, float]:
        """Each method's place averaged over every score (NaN when there are no scores)."""
        if not self.metrics:
            return {method: math.nan for method in self.methods}
        return {
            method: sum(self.rank(method, metric) for metric in self.metrics) / len(self.metrics)
            for method in self.methods
        }

    def best(self, metric: str) -> str | None:
        """The best method by ``metric`` (None when every mean is NaN)."""
        first = self.ranking(metric)[0] if self.results else None
        if first is None or math.isnan(self._mean(self.result(first), metric)):
            return None
        return first

    def table(self) -> list[dict[str, Any]]:
        """One plain row per method, best first by ``mean_ranks()``: ``method``, each score's
        mean under its name and its std under ``"<name> std"``, ``mean rank``, ``sanity``
        and ``sanity passed`` (None when not checked), ``compute_ms``; ready for
        ``pandas.DataFrame(evaluation.table())``."""
        ranks = self.mean_ranks()
        rows = []
        for method in self.ranking():
            r = self.result(method)
            row: dict[str, Any] = {"method": method}
            for name in self.metrics:
                summary = r.scores.get(name)
                row[name] = math.nan if summary is None else summary.mean
                row[f"{name} std"] = math.nan if summary is None else summary.std
            row["mean rank"] = ranks[method]
            row["sanity"] = None if r.sanity is None else r.sanity.correlation
            row["sanity passed"] = None if r.sanity is None else r.sanity.passed
            row["compute_ms"] = r.compute_ms
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The whole report as JSON-ready values (NaN as None), with each score's ranking."""
        return {
            "model": self.model,
            "layer": self.layer,
            "targets": list(self.targets),
            "metrics": [info.to_dict() for info in self.metrics.values()],
            "methods": [r.to_dict() for r in self.results],
            "ranking": {name: self.ranking(name) for name in self.metrics},
            "faithfulness_steps": self.faithfulness_steps,
            "faithfulness_percentile": self.faithfulness_percentile,
            "pointing_tolerance": self.pointing_tolerance,
            "sanity_threshold": self.sanity_threshold,
            "total_ms": self.total_ms,
        }

    def __repr__(self) -> str:
        return (
            f"Evaluation(model={self.model!r}, layer={self.layer!r}, images={self.images}, "
            f"ranking={_reprs.brief(self.ranking())}, metrics={_reprs.brief(list(self.metrics))}, "
            f"sanity={_reprs.brief(self.sanity)}, total_ms={self.total_ms:.4g})"
        )

    def _repr_html_(self) -> str:
        """The ranked table, for notebooks."""
        from camserve.render.evaluation_table import evaluation_table_html

        return evaluation_table_html(self)


EvaluationEvent = EvaluationProgress | Evaluation


__all__ = [
    "RANDOM",
    "Evaluation",
    "EvaluationEvent",
    "EvaluationProgress",
    "MethodEvaluation",
    "MetricInfo",
    "SanityCheck",
    "SanityStage",
    "ScoreSummary",
]
