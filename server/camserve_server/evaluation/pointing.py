"""The pointing game (Zhang et al. 2016, "Top-down Neural Attention by Excitation
Backprop"): a map hits when its maximum lies within ``tolerance`` pixels of a box of the
target class, as TorchRay's ``PointingGame`` scores it (the box dilated by a disc).

Boxes arrive in pixels of the image as sent and are placed on the model's input with the
preprocessing's ``Placement`` (resize and centre crop); the maximum is the first one in
row-major order of the map at the input's resolution.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ..models.preprocess import Placement
from .query import Box


def to_input_frame(box: Box, placement: Placement | None, input_size: tuple[int, int]) -> Box:
    """``box`` in pixels of the model's input ``(H, W)``: the picture's crop region scaled
    to it; a tensor's boxes (no placement) are already there."""
    if placement is None:
        return box
    top, left, height, width = placement.box
    sy, sx = input_size[0] / height, input_size[1] / width
    x0, y0, x1, y1 = box
    return ((x0 - left) * sx, (y0 - top) * sy, (x1 - left) * sx, (y1 - top) * sy)


def hits(maps: npt.NDArray[np.float32], boxes: tuple[Box, ...], tolerance: float) -> float:
    """1.0 when the map's maximum is within ``tolerance`` of a box, 0.0 when not, NaN
    when there is no box to point at."""
    if not boxes:
        return float("nan")
    row, col = (int(i) for i in np.unravel_index(int(np.argmax(maps)), maps.shape))
    for x0, y0, x1, y1 in boxes:
        # the distance from the pixel (col, row) to the box's pixels [x0, x1) x [y0, y1)
        dx = max(math.ceil(x0) - col, 0, col - (math.ceil(x1) - 1))
        dy = max(math.ceil(y0) - row, 0, row - (math.ceil(y1) - 1))
        if dx * dx + dy * dy <= tolerance * tolerance and x1 > x0 and y1 > y0:
            return 1.0
    return 0.0
