"""How far one attribution map is from a reference map of the same image.

``max_relative``: ``max |a - e| / max |e|``. ``rank_correlation``: Spearman's rho,
the Pearson correlation of the pixels' ranks (ties share their mean rank).
``top_overlap``: the share of the reference's top ``share`` of pixels (by signed
value: the evidence for the class) that are in the map's own top ``share``.
``heatmap_difference``: ``max |h(a) - h(e)|`` of the displayed heatmaps
``h = minmax(relu(map))`` in ``[0, 1]``.
"""

from __future__ import annotations

import torch


def max_relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``0 .. n-1`` of the flattened ``values``, ties at their mean rank."""
    flat = values.flatten().double()
    order = flat.argsort()
    _, inverse, counts = torch.unique(flat[order], return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() + 1) / 2
    ranks = torch.empty_like(flat)
    ranks[order] = mean_rank[inverse]
    return ranks


def rank_correlation(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a, e = _ranks(actual), _ranks(expected)
    a, e = a - a.mean(), e - e.mean()
    return float((a * e).sum() / (a.norm() * e.norm()).clamp_min(1e-30))


def top_overlap(actual: torch.Tensor, expected: torch.Tensor, share: float = 0.1) -> float:
    count = max(1, round(share * expected.numel()))
    top_a = set(actual.flatten().topk(count).indices.tolist())
    top_e = set(expected.flatten().topk(count).indices.tolist())
    return len(top_a & top_e) / count


def _heatmap(values: torch.Tensor) -> torch.Tensor:
    positive = values.clamp_min(0)
    low, high = positive.min(), positive.max()
    return (positive - low) / (high - low).clamp_min(1e-30)


def heatmap_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((_heatmap(actual) - _heatmap(expected)).abs().max())


def agreement(actual: torch.Tensor, expected: torch.Tensor) -> dict[str, float]:
    """Every measure above, by name."""
    return {
        "max_rel_diff": max_relative(actual, expected),
        "rank_correlation": rank_correlation(actual, expected),
        "top10_overlap": top_overlap(actual, expected),
        "heatmap_max_diff": heatmap_difference(actual, expected),
    }
