"""Spearman rank correlation between two sets of maps, one value per pair of maps.

``rho = pearson(rank(a), rank(b))`` over the pixels, ties given their average rank, as
``scipy.stats.spearmanr`` computes it. A constant map has no ranking: against a varying
map it counts as 0 (no agreement: re-initialisation that blanks a map changed it
completely), against another constant map as NaN."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

Maps = npt.NDArray[np.float32]


def spearman_rows(a: Maps, b: Maps) -> npt.NDArray[np.float64]:
    """``rho(a[i], b[i])`` for every ``i`` of two stacks of maps ``(N, H, W)``."""
    if a.shape != b.shape:
        raise ValueError(f"maps of shapes {a.shape} and {b.shape} cannot be compared")
    n = a.shape[0]
    ranks_a = rankdata(a.reshape(n, -1), axis=1)
    ranks_b = rankdata(b.reshape(n, -1), axis=1)
    ranks_a -= ranks_a.mean(axis=1, keepdims=True)
    ranks_b -= ranks_b.mean(axis=1, keepdims=True)
    covariance = (ranks_a * ranks_b).sum(axis=1)
    scale = np.sqrt((ranks_a**2).sum(axis=1) * (ranks_b**2).sum(axis=1))
    constant_a = (ranks_a == 0).all(axis=1)
    constant_b = (ranks_b == 0).all(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho: npt.NDArray[np.float64] = np.where(scale > 0, covariance / scale, 0.0)
    rho[constant_a & constant_b] = np.nan
    return rho
