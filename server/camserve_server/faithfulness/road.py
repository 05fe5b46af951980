"""ROAD, RemOve And Debias (Rong et al. 2022): the target's probability change when the
most (MoRF) or least (LeRF) relevant pixels are imputed from their neighbours.

As pytorch-grad-cam's ``ROADMostRelevantFirst(p)`` and ``ROADLeastRelevantFirst(p)`` with
a softmax target: MoRF imputes the pixels whose map value is at or above the map's
``p``-th percentile, LeRF those whose ``1 - map`` is at or above the ``p``-th percentile
of ``1 - map``; each score is ``p'_c - p_c``, the probability on the imputed input minus
the clean one. The imputation (``imputation.py``) runs on the CPU, chunk by chunk, with
noise from a generator seeded with ``SEED`` for every map, so a score depends neither on
its batch nor on the device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from .base import ScoredRows, ScoreFamily
from .imputation import noisy_linear_imputation

if TYPE_CHECKING:
    from .request import Faithfulness

SEED = 0


def kept_pixels(
    heatmap: npt.NDArray[np.float32], percentile: float, *, most_relevant: bool
) -> npt.NDArray[np.bool_]:
    """The pixels ROAD keeps: those ranked strictly below the ``percentile``-th percentile
    of the map (MoRF) or of ``1 - map`` (LeRF), compared in float32 as the reference does."""
    ranked = heatmap if most_relevant else 1 - heatmap
    threshold = np.float32(np.percentile(ranked, percentile))
    kept: npt.NDArray[np.bool_] = ranked < threshold
    return kept


class Road(ScoreFamily):
    """One imputed input per row and wanted order (MoRF, LeRF)."""

    names = ("road_morf", "road_lerf")

    def __init__(self, rows: ScoredRows, request: Faithfulness) -> None:
        super().__init__(rows, request)
        self._after = rows.maps.new_empty((len(rows), len(self.wanted)))
        self._host: tuple[torch.Tensor, npt.NDArray[np.float32]] | None = None

    def __len__(self) -> int:
        return len(self.rows) * len(self.wanted)

    def inputs(self, start: int, stop: int) -> torch.Tensor:
        if self._host is None:  # the inputs and maps, copied off the device once
            self._host = (self.rows.x.float().cpu(), self.rows.maps.cpu().numpy())
        images, maps = self._host
        samples = self.rows.sample.tolist()
        imputed = []
        for job in range(start, stop):
            row, order = divmod(job, len(self.wanted))
            keep = kept_pixels(
                maps[row], self.request.percentile, most_relevant=self.wanted[order] == "road_morf"
            )
            generator = torch.Generator().manual_seed(SEED)
            imputed.append(noisy_linear_imputation(images[samples[row]], keep, generator))
        return torch.stack(imputed).to(self.rows.x.device)

    def take(self, start: int, stop: int, probabilities: torch.Tensor) -> None:
        job = torch.arange(start, stop, device=self.rows.x.device)
        row, order = job // len(self.wanted), job % len(self.wanted)
        self._after[row, order] = self.rows.chosen(probabilities, row)

    def scores(self, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: self._after[:, i] - clean for i, name in enumerate(self.wanted)}
