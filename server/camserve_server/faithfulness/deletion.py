"""Deletion and insertion (Petsiuk et al. 2018, RISE): areas under the target's probability
as the map's most relevant pixels are removed from the input, or restored to a blank one.

As torchcam 0.5's ``DeletionInsertionMetric`` with a softmax: the map's ``P = H * W``
positions ranked by a stable descending sort; ``s = ceil(P / steps)`` positions change per
step, at counts ``0, s, 2s, ... , P``. Deletion sets the ``count`` highest-ranked
positions of every channel to the baseline (zero in the model's normalised input space);
insertion starts from the baseline and restores them. Each score is the trapezoid area
under ``p_c`` against the fraction ``count / P``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from .base import ScoredRows, ScoreFamily

if TYPE_CHECKING:
    from .request import Faithfulness


class DeletionInsertion(ScoreFamily):
    """Input 0 is the all-baseline image, shared by every row (the last point of deletion,
    the first of insertion); then, row after row, each interior count for each wanted
    curve. The clean input's probability is the other end of both curves."""

    names = ("deletion", "insertion")

    def __init__(self, rows: ScoredRows, request: Faithfulness) -> None:
        super().__init__(rows, request)
        device = rows.x.device
        positions = rows.positions
        step = math.ceil(positions / request.steps)
        self.counts = [*range(0, positions, step), positions]
        self._counts = torch.tensor(self.counts, device=device)
        self.fractions = torch.tensor(self.counts, device=device, dtype=torch.float32)
        self.fractions.div_(positions)
        self._restores = torch.tensor([name == "insertion" for name in self.wanted], device=device)
        self._per_row = (len(self.counts) - 2) * len(self.wanted)
        order = torch.argsort(rows.maps.flatten(1), dim=1, descending=True, stable=True)
        places = torch.arange(positions, device=device).expand_as(order)
        self._ranks = torch.empty_like(order).scatter_(1, order, places)
        self._curves = rows.maps.new_empty((len(rows), len(self.wanted), len(self.counts)))
        self._blank: torch.Tensor | None = None  # the softmax of the all-baseline input

    def __len__(self) -> int:
        return 1 + len(self.rows) * self._per_row

    def _jobs(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Row, curve and point of the perturbed inputs ``start .. stop - 1`` (from 1)."""
        job = torch.arange(start - 1, stop - 1, device=self.rows.x.device)
        row, within = job // self._per_row, job % self._per_row
        return row, within % len(self.wanted), within // len(self.wanted) + 1

    def inputs(self, start: int, stop: int) -> torch.Tensor:
        x = self.rows.x
        parts = []
        if start == 0:
            parts.append(x.new_zeros((1, *x.shape[1:])))
            start = 1
        if start < stop:
            row, curve, point = self._jobs(start, stop)
            relevant = self._ranks[row] < self._counts[point, None]
            # Deletion keeps the positions not yet removed; insertion those restored.
            keep = relevant == self._restores[curve, None]
            pixels = x.flatten(2)[self.rows.sample[row]]
            parts.append(torch.where(keep[:, None], pixels, 0.0).reshape(-1, *x.shape[1:]))
        return torch.cat(parts)

    def take(self, start: int, stop: int, probabilities: torch.Tensor) -> None:
        if start == 0:
            self._blank = probabilities[0]
            probabilities, start = probabilities[1:], 1
        if start < stop:
            row, curve, point = self._jobs(start, stop)
            self._curves[row, curve, point] = self.rows.chosen(probabilities, row)

    def scores(self, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        assert self._blank is not None, "the all-baseline input has not run"
        blank = self._blank[self.rows.target]
        areas = {}
        for index, name in enumerate(self.wanted):
            curve = self._curves[:, index]
            first, last = (blank, clean) if name == "insertion" else (clean, blank)
            curve[:, 0], curve[:, -1] = first, last
            areas[name] = torch.trapezoid(curve, self.fractions, dim=1)
        return areas
