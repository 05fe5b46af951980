"""What a request asks of the faithfulness step: the score names and their two settings,
checked once when the request is planned."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidArgument, choices
from ..options import Option
from .registry import SCORE_NAMES

DEFAULT_STEPS = 20
DEFAULT_PERCENTILE = 80
STEPS = Option(
    "faithfulness_options.steps",
    DEFAULT_STEPS,
    "deletion and insertion: steps of each curve",
    minimum=2,
    maximum=256,
)
PERCENTILE = Option(
    "faithfulness_options.percentile",
    DEFAULT_PERCENTILE,
    "ROAD: the map's percentile that splits most from least relevant pixels",
    minimum=1,
    maximum=99,
)


@dataclass(frozen=True)
class Faithfulness:
    """The scores to compute with every map of a batch (each name once, in the order
    asked), the steps of the deletion and insertion curves, and ROAD's percentile."""

    scores: tuple[str, ...]
    steps: int = DEFAULT_STEPS
    percentile: int = DEFAULT_PERCENTILE

    def wants(self, *names: str) -> tuple[str, ...]:
        """The names among ``names`` this request asks for, in ``names``' order."""
        return tuple(name for name in names if name in self.scores)


def faithfulness_request(
    names: Sequence[str], steps: int = 0, percentile: int = 0
) -> Faithfulness | None:
    """The checked request, or None when ``names`` is empty. A zero setting takes its
    default; an unknown name or a setting out of range is ``InvalidArgument``."""
    unknown = sorted({name for name in names if name not in SCORE_NAMES})
    if unknown:
        raise InvalidArgument(
            f"unknown faithfulness score(s) {', '.join(map(repr, unknown))}; "
            f"valid scores: {choices(SCORE_NAMES)}"
        )
    chosen = (
        _setting(STEPS, steps, DEFAULT_STEPS),
        _setting(PERCENTILE, percentile, DEFAULT_PERCENTILE),
    )
    if not names:
        return None
    return Faithfulness(tuple(dict.fromkeys(names)), *chosen)


def _setting(option: Option, value: int, default: int) -> int:
    """``value`` checked against ``option``'s bounds; 0 is the default."""
    if not value:
        return default
    parsed = option.parse(value)
    assert isinstance(parsed, int)
    return parsed
