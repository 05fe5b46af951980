"""Every faithfulness score by name, and the family that computes it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ScoredRows, ScoreFamily
from .confidence import ConfidenceChange
from .deletion import DeletionInsertion
from .road import Road

if TYPE_CHECKING:
    from .request import Faithfulness

FAMILIES: tuple[type[ScoreFamily], ...] = (DeletionInsertion, ConfidenceChange, Road)
SCORE_NAMES: tuple[str, ...] = tuple(name for family in FAMILIES for name in family.names)


def families_for(rows: ScoredRows, request: Faithfulness) -> list[ScoreFamily]:
    """The families that compute the scores ``request`` asks for, ready for ``rows``."""
    return [family(rows, request) for family in FAMILIES if request.wants(*family.names)]
