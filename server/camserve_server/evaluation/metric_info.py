"""Each score an evaluation reports: its direction, for ranking, and what it measures."""

from __future__ import annotations

from ..faithfulness import SCORE_NAMES
from .events import MetricInfo

POINTING_GAME = "pointing_game"

SCORES: dict[str, MetricInfo] = {
    info.name: info
    for info in (
        MetricInfo(
            "deletion",
            False,
            "area under the target's probability as the most relevant pixels are removed",
        ),
        MetricInfo(
            "insertion",
            True,
            "area under the target's probability as the most relevant pixels are restored",
        ),
        MetricInfo(
            "drop_in_confidence",
            False,
            "probability lost when the input is multiplied by the map",
        ),
        MetricInfo(
            "increase_in_confidence",
            True,
            "share of images whose probability rises when multiplied by the map",
        ),
        MetricInfo(
            "road_morf",
            False,
            "probability change when the most relevant pixels are imputed (ROAD)",
        ),
        MetricInfo(
            "road_lerf",
            True,
            "probability change when the least relevant pixels are imputed (ROAD)",
        ),
        MetricInfo(
            POINTING_GAME,
            True,
            "share of images whose map peaks within the tolerance of a box",
        ),
    )
}
assert set(SCORE_NAMES) <= set(SCORES), "every faithfulness score needs a direction"


def metric_infos(names: tuple[str, ...], pointing: bool) -> tuple[MetricInfo, ...]:
    """The reported scores' descriptions, in order, the pointing game last."""
    return tuple(SCORES[name] for name in (*names, *((POINTING_GAME,) if pointing else ())))
