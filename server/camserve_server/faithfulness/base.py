"""What every faithfulness score shares: the rows it scores and the perturbed inputs it runs.

A batch's maps are scored row by row, one row per (sample, target) pair. A family of
scores lists the perturbed inputs it needs (``Perturbations``); ``passes.run_passes``
runs them through the model in chunks, handing each family the softmax of every input;
the family then turns them into one value per row and score.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from ..methods.base import SampleResult

if TYPE_CHECKING:
    from .request import Faithfulness


@dataclass(frozen=True)
class ScoredRows:
    """The rows of a batch: inputs ``x`` ``(N, 3, H, W)``, each row's sample and target
    class ``(M,)``, its map ``(M, H, W)`` in [0, 1], and the rows per sample."""

    x: torch.Tensor
    sample: torch.Tensor
    target: torch.Tensor
    maps: torch.Tensor
    counts: list[int]

    @classmethod
    def of(cls, x: torch.Tensor, samples: list[SampleResult]) -> ScoredRows:
        """The rows of a method's samples, on ``x``'s device."""
        counts = [int(sample.targets.numel()) for sample in samples]
        index = torch.arange(len(samples), device=x.device)
        maps = []
        for sample in samples:
            assert sample.heatmaps is not None, "a method with maps per target gave none"
            maps.append(sample.heatmaps.detach().float())
        return cls(
            x=x,
            sample=torch.repeat_interleave(index, torch.tensor(counts, device=x.device)),
            target=torch.cat([sample.targets for sample in samples]).long().to(x.device),
            maps=torch.cat(maps).to(x.device),
            counts=counts,
        )

    def __len__(self) -> int:
        return int(self.target.numel())

    @property
    def positions(self) -> int:
        """Pixels of one map, ``H * W``."""
        return int(self.maps.shape[-2] * self.maps.shape[-1])

    def chosen(self, probabilities: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Each row's target probability ``(k,)`` from the softmax ``(k, C)`` of its input."""
        picked = torch.arange(len(rows), device=probabilities.device)
        return probabilities[picked, self.target[rows]]

    def split(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Per-row values ``(M,)`` as one tensor per sample."""
        return list(torch.split(values, self.counts))


class Perturbations(ABC):
    """Inputs to run through the model, indexed ``0 .. len - 1``, built chunk by chunk."""

    @abstractmethod
    def __len__(self) -> int:
        """How many inputs."""

    @abstractmethod
    def inputs(self, start: int, stop: int) -> torch.Tensor:
        """Inputs ``start .. stop - 1`` as a batch ``(stop - start, 3, H, W)``."""

    @abstractmethod
    def take(self, start: int, stop: int, probabilities: torch.Tensor) -> None:
        """Keep what is needed of the softmax ``(stop - start, C)`` of those inputs."""


class ScoreFamily(Perturbations):
    """Scores computed from the same perturbed inputs; a request may want some of them."""

    names: ClassVar[tuple[str, ...]]

    def __init__(self, rows: ScoredRows, request: Faithfulness) -> None:
        self.rows = rows
        self.request = request
        self.wanted = request.wants(*self.names)

    @abstractmethod
    def scores(self, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every wanted score ``(M,)``, given each row's probability on the clean input."""
