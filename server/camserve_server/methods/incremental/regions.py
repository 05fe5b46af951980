"""Changed regions of every occluded copy, one row per window: ``(top, bottom, left, right)``,
half-open; an empty region is ``(EMPTY, 0)`` on both axes, neutral under a union."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EMPTY = 1 << 30


@dataclass(frozen=True)
class Reach:
    """A sliding-window operator along one axis: output ``o`` reads inputs
    ``o * stride - padding + dilation * j`` for ``j < kernel``."""

    kernel: int
    stride: int
    padding: int
    dilation: int

    @property
    def span(self) -> int:
        return self.dilation * (self.kernel - 1) + 1

    def input_length(self, outputs: int) -> int:
        """Inputs read by ``outputs`` consecutive outputs."""
        return (outputs - 1) * self.stride + self.span


def _axis_through(
    start: torch.Tensor, stop: torch.Tensor, reach: Reach, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs whose receptive field touches inputs ``[start, stop)``, clipped to ``size``."""
    low = -torch.div(-(start + reach.padding - reach.span + 1), reach.stride, rounding_mode="floor")
    high = torch.div(stop - 1 + reach.padding, reach.stride, rounding_mode="floor") + 1
    low, high = low.clamp(min=0), high.clamp(max=size)
    empty = (start >= stop) | (low >= high)
    return torch.where(empty, EMPTY, low), torch.where(empty, 0, high)


def through_window(
    regions: torch.Tensor, rows: Reach, cols: Reach, size: tuple[int, int]
) -> torch.Tensor:
    """The regions ``(W, 4)`` after a convolution or pooling with output ``size``."""
    top, bottom = _axis_through(regions[:, 0], regions[:, 1], rows, size[0])
    left, right = _axis_through(regions[:, 2], regions[:, 3], cols, size[1])
    return torch.stack([top, bottom, left, right], dim=1)


def union(parts: list[torch.Tensor]) -> torch.Tensor:
    """The smallest box holding every part's region, window by window."""
    stacked = torch.stack(parts)
    starts = stacked[:, :, [0, 2]].amin(dim=0)
    stops = stacked[:, :, [1, 3]].amax(dim=0)
    return torch.stack([starts[:, 0], stops[:, 0], starts[:, 1], stops[:, 1]], dim=1)


def fixed_boxes(
    regions: torch.Tensor, size: tuple[int, int]
) -> tuple[tuple[int, int], torch.Tensor]:
    """One box shape for all windows, the largest region's, and each window's box corner
    ``(W, 2)``, moved inside the layer: every box holds its window's region."""
    extent = (regions[:, [1, 3]] - regions[:, [0, 2]]).clamp(min=0)
    shape = (int(extent[:, 0].max()), int(extent[:, 1].max()))
    limit = torch.tensor([size[0] - shape[0], size[1] - shape[1]])
    corners = torch.minimum(regions[:, [0, 2]], limit).clamp(min=0)
    return shape, corners


def truncated(regions: torch.Tensor, share: float, size: tuple[int, int]) -> torch.Tensor:
    """Krypton's projective-field threshold (Nakandala et al., SIGMOD 2019, section 4.1):
    a region longer than ``ceil(share * side)`` on an axis is cut to that length around
    its centre, ``start' = start + (length - cap) // 2``; shorter regions are kept."""
    parts = []
    for axis, side in enumerate(size):
        start, stop = regions[:, 2 * axis], regions[:, 2 * axis + 1]
        cap = max(1, math.ceil(share * side))
        length = stop - start
        cut = (length > cap) & (start < stop)
        new_start = torch.where(
            cut, start + torch.div(length - cap, 2, rounding_mode="floor"), start
        )
        parts += [new_start, torch.where(cut, new_start + cap, stop)]
    return torch.stack(parts, dim=1)
