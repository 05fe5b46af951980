"""What an evaluation streams: progress after every unit of work, then one report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Values = npt.NDArray[np.float64]


@dataclass(frozen=True)
class EvaluationProgress:
    """Maps computed so far; ``stage`` is "explain" (the model) or "sanity" (a randomised
    copy), ``method`` the method of the unit just done."""

    stage: str
    method: str
    done: int
    total: int
    elapsed_s: float


@dataclass(frozen=True)
class Summary:
    """A score over the images: one value per image (NaN where it has none), their mean
    and population standard deviation over the values present."""

    values: Values

    @property
    def mean(self) -> float:
        present = self.values[~np.isnan(self.values)]
        return float(present.mean()) if present.size else float("nan")

    @property
    def std(self) -> float:
        present = self.values[~np.isnan(self.values)]
        return float(present.std()) if present.size else float("nan")


@dataclass(frozen=True)
class SanityStage:
    """The correlation of the maps once ``layers_randomised`` parameterised layers, the
    lowest of them ``layer``, are re-initialised."""

    layer: str
    layers_randomised: int
    correlation: Summary


@dataclass(frozen=True)
class SanityResult:
    """The cascade's curve, from the output down, and its verdict.

    ``correlation`` is the highest mean correlation over the stages: how much of the
    maps survives re-initialisation where they change least (usually the first stage,
    only the top layers re-initialised, where Adebayo et al. find guided backprop
    unmoved). The method passes when it is below ``threshold``; a correlation that is
    NaN at every stage (maps with no ranking) does not pass.
    """

    stages: tuple[SanityStage, ...]
    threshold: float

    @property
    def correlation(self) -> float:
        means = np.array([stage.correlation.mean for stage in self.stages])
        return float(np.nanmax(means)) if not np.isnan(means).all() else float("nan")

    @property
    def passed(self) -> bool:
        return bool(self.correlation < self.threshold)


@dataclass(frozen=True)
class MethodReport:
    """One method's scores by name, its sanity check (None: not asked), and its time."""

    method: str
    scores: dict[str, Summary]
    sanity: SanityResult | None
    compute_s: float


@dataclass(frozen=True)
class MetricInfo:
    """A score's name, its direction and one line on what it measures."""

    name: str
    higher_is_better: bool
    description: str


@dataclass(frozen=True)
class EvaluationReport:
    """The finished evaluation."""

    model: str
    layer: str
    targets: tuple[int, ...]
    methods: tuple[MethodReport, ...]
    metrics: tuple[MetricInfo, ...]
    faithfulness_steps: int
    faithfulness_percentile: int
    pointing_tolerance: int
    sanity_threshold: float
    total_s: float


EvaluationEvent = EvaluationProgress | EvaluationReport
