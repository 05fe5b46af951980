"""``B`` occluded copies of one layer's output, as one table of channel rows.

Rows ``0 .. H*W - 1`` are the original image's positions (channels last), the next
rows hold each fill value an operator pads with, and the rest each copy's recomputed
box of ``h x w`` positions, copy after copy. Reading any slice of any copy is then a
single ``index_select`` of rows, ``(B, h', w', C)``, returned as a channels-last
``(B, C, h', w')`` tensor: no dense copy of the layer, no per-element merge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

FILLS = (0.0, float("-inf"))  # a convolution's and average pooling's padding; max pooling's


def base_rows(original: torch.Tensor) -> torch.Tensor:
    """The original ``(1, C, H, W)`` output as ``(H*W + len(FILLS), C)`` rows, fills last."""
    channels = original.shape[1]
    rows = original[0].permute(1, 2, 0).reshape(-1, channels)
    fills = torch.tensor(FILLS, dtype=rows.dtype, device=rows.device)[:, None]
    return torch.cat([rows, fills.expand(-1, channels)])


def _inside(indices: torch.Tensor, size: int) -> torch.Tensor:
    return (indices >= 0) & (indices < size)


@dataclass
class Boxed:
    """A node's output for ``B`` copies: the original's ``base`` rows (``base_rows``) and
    each copy's ``patch`` ``(B, C, h, w)`` at ``corners`` ``(B, 2)`` of an ``H x W`` layer."""

    base: torch.Tensor
    size: tuple[int, int]
    corners: torch.Tensor
    patch: torch.Tensor
    _table: torch.Tensor | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.patch.shape[-2]), int(self.patch.shape[-1]))

    def table(self) -> torch.Tensor:
        """The base rows followed by every copy's box rows (made once, on first read)."""
        if self._table is None:
            rows = self.patch.permute(0, 2, 3, 1).reshape(-1, self.patch.shape[1])
            self._table = torch.cat([self.base, rows.to(self.base.dtype)])
        return self._table

    def index(self, rows: torch.Tensor, cols: torch.Tensor, fill: float | None) -> torch.Tensor:
        """Table rows ``(B, len(rows), len(cols))`` of every copy's ``rows`` x ``cols``
        ``(B, h')``, ``(B, w')``: the copy's box where it lies, else the original, and the
        ``fill`` row outside the layer (``fill`` None: every index lies inside)."""
        (height, width), (box_h, box_w) = self.size, self.shape
        count = rows.shape[0]
        at = rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]
        in_rows, in_cols = rows - self.corners[:, :1], cols - self.corners[:, 1:]
        in_box = _inside(in_rows, box_h)[:, :, None] & _inside(in_cols, box_w)[:, None, :]
        first = height * width + len(FILLS)
        copy = torch.arange(count, device=rows.device)[:, None, None] * (box_h * box_w)
        boxed = first + copy + in_rows[:, :, None] * box_w + in_cols[:, None, :]
        index = torch.where(in_box, boxed, at)
        if fill is None:
            return index
        outside = ~(_inside(rows, height)[:, :, None] & _inside(cols, width)[:, None, :])
        return index.masked_fill(outside, height * width + FILLS.index(fill))

    def read(self, rows: torch.Tensor, cols: torch.Tensor, fill: float | None) -> torch.Tensor:
        """Every copy's values at ``rows`` x ``cols``, channels last ``(B, C, h', w')``."""
        if self._box_is(rows, cols):
            return self.patch
        index = self.index(rows, cols, fill)
        picked = self.table().index_select(0, index.flatten())
        return picked.view(*index.shape, -1).permute(0, 3, 1, 2)

    def _box_is(self, rows: torch.Tensor, cols: torch.Tensor) -> bool:
        """Whether ``rows`` x ``cols`` are exactly each copy's box."""
        if (rows.shape[1], cols.shape[1]) != self.shape:
            return False
        return bool((rows[:, 0] == self.corners[:, 0]).all()) and bool(
            (cols[:, 0] == self.corners[:, 1]).all()
        )

    def dense(self) -> torch.Tensor:
        """The full copies ``(B, C, H, W)``, channels last."""
        count, device = self.patch.shape[0], self.patch.device
        rows = torch.arange(self.size[0], device=device).expand(count, -1)
        cols = torch.arange(self.size[1], device=device).expand(count, -1)
        picked = self.table().index_select(0, self.index(rows, cols, None).flatten())
        return picked.view(count, *self.size, -1).permute(0, 3, 1, 2)
