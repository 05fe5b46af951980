"""Input attributions ``(3, H, W)`` made displayable, as Captum and pytorch-grad-cam do.

``signed_map`` follows Captum's ``visualize_image_attr``: channels summed, then
scaled by the value below which lies ``100 - outlier_perc`` percent of the total
absolute attribution (``_normalize_attr``), and clipped to [-1, 1], so 0 stays 0
and a few extreme pixels do not wash the rest out. ``gradient_image`` is
pytorch-grad-cam's ``deprocess_image``: the gradient as an RGB picture.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Sign = Literal["all", "absolute_value"]
DEFAULT_OUTLIER_PERC = 2.0  # Captum's default


def _channels_first(attribution: npt.ArrayLike) -> npt.NDArray[np.float64]:
    values = np.asarray(attribution, dtype=np.float64)
    if values.ndim != 3 or values.shape[0] != 3:
        raise ValueError(f"an attribution is (3, H, W), got shape {values.shape}")
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)


def outlier_threshold(magnitudes: npt.ArrayLike, outlier_perc: float) -> float:
    """The smallest value at which the sorted ``magnitudes`` (non-negative) reach
    ``100 - outlier_perc`` percent of their sum: Captum's ``_cumulative_sum_threshold``."""
    if not 0.0 <= outlier_perc < 100.0:
        raise ValueError(f"outlier_perc must lie in [0, 100), got {outlier_perc}")
    ordered = np.sort(np.asarray(magnitudes, dtype=np.float64).ravel())
    if ordered.size == 0:
        return 0.0
    sums = np.cumsum(ordered)
    index = int(np.flatnonzero(sums >= sums[-1] * 0.01 * (100.0 - outlier_perc))[0])
    return float(ordered[index])


def signed_map(
    attribution: npt.ArrayLike, outlier_perc: float = DEFAULT_OUTLIER_PERC, sign: Sign = "all"
) -> npt.NDArray[np.float32]:
    """An attribution ``(3, H, W)`` as one map ``(H, W)``: summed over channels (its absolute
    value for ``sign="absolute_value"``), divided by the outlier threshold, clipped to
    [-1, 1] ([0, 1]). All zeros where the attribution is zero everywhere."""
    summed = _channels_first(attribution).sum(axis=0)
    if sign == "absolute_value":
        summed = np.abs(summed)
    threshold = outlier_threshold(np.abs(summed), outlier_perc)
    if threshold <= 0.0:
        return np.zeros(summed.shape, np.float32)
    scaled: npt.NDArray[np.float32] = np.clip(summed / threshold, -1.0, 1.0).astype(np.float32)
    return scaled


def sign_of(attribution: npt.ArrayLike) -> Sign:
    """``"absolute_value"`` for an attribution with no negative value (saliency's
    ``|gradient|``), else ``"all"``: which of Captum's views shows it."""
    return "absolute_value" if float(np.min(attribution)) >= 0.0 else "all"


def gradient_image(attribution: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """A gradient ``(3, H, W)`` as uint8 RGB ``(H, W, 3)``: shifted to mean 0, scaled to
    standard deviation 0.1, centred on 0.5 (grey: no gradient) and clipped to [0, 1]."""
    values: npt.NDArray[Any] = _channels_first(attribution).transpose(1, 2, 0)
    values = values - values.mean()
    values = values / (values.std() + 1e-5) * 0.1 + 0.5
    return np.asarray(np.clip(values, 0.0, 1.0) * 255, dtype=np.uint8)


__all__ = [
    "DEFAULT_OUTLIER_PERC",
    "Sign",
    "gradient_image",
    "outlier_threshold",
    "sign_of",
    "signed_map",
]
