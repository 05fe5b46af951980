"""Drop and increase in confidence (Chattopadhay et al. 2018, Grad-CAM++): the input
multiplied by the map, as pytorch-grad-cam's ``DropInConfidence`` and
``IncreaseInConfidence`` with a softmax target.

With ``p_c`` the target's probability on the clean input ``x`` and ``p'_c`` on ``x * map``
(the map broadcast over the channels of the normalised input):
``drop_in_confidence = max(p_c - p'_c, 0)``, ``increase_in_confidence = [p'_c > p_c]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .base import ScoredRows, ScoreFamily

if TYPE_CHECKING:
    from .request import Faithfulness


class ConfidenceChange(ScoreFamily):
    """One input per row, ``x * map``, shared by both scores."""

    names = ("drop_in_confidence", "increase_in_confidence")

    def __init__(self, rows: ScoredRows, request: Faithfulness) -> None:
        super().__init__(rows, request)
        self._masked = rows.maps.new_empty(len(rows))

    def __len__(self) -> int:
        return len(self.rows)

    def inputs(self, start: int, stop: int) -> torch.Tensor:
        rows = self.rows
        return rows.x[rows.sample[start:stop]] * rows.maps[start:stop, None]

    def take(self, start: int, stop: int, probabilities: torch.Tensor) -> None:
        row = torch.arange(start, stop, device=self.rows.x.device)
        self._masked[start:stop] = self.rows.chosen(probabilities, row)

    def scores(self, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        change = self._masked - clean
        values = {
            "drop_in_confidence": (-change).clamp_min(0.0),
            "increase_in_confidence": (change > 0).float(),
        }
        return {name: values[name] for name in self.wanted}
