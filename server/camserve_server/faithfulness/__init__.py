"""Faithfulness scores of explanation maps: does a map point at what the model used?

One small file per family of scores (deletion and insertion, confidence change, ROAD),
the ROAD imputation in its own, a registry of score names, and the step the device
workers run after a method (``scoring.add_faithfulness``). docs/methods.md,
"Faithfulness", gives the definitions and the reference each one matches.
"""

from .registry import SCORE_NAMES
from .request import PERCENTILE, STEPS, Faithfulness, faithfulness_request
from .scoring import add_faithfulness, score_maps

__all__ = [
    "PERCENTILE",
    "SCORE_NAMES",
    "STEPS",
    "Faithfulness",
    "add_faithfulness",
    "faithfulness_request",
    "score_maps",
]
