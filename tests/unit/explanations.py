"""SDK results built without a server, for the render and repr tests."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from camserve.results import ClassScore, Explanation, Timings

LABELS = ["circle", "square", "triangle", "cross"]


def explanation(
    method: str,
    *,
    targets: tuple[int, ...] = (2,),
    size: tuple[int, int] = (64, 64),
    raw: npt.NDArray[np.float32] | None = None,
    scores: tuple[tuple[int, float], ...] = ((2, 0.93), (0, 0.05)),
) -> Explanation:
    """An ``Explanation`` as the SDK would return it, without a server."""
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]] / max(size)
    blobs = [np.exp(-((yy - 0.3 - 0.1 * k) ** 2 + (xx - 0.5) ** 2) / 0.05) for k in targets]
    heatmaps = np.stack(blobs).astype(np.float32) if blobs else np.zeros((0, *size), np.float32)
    return Explanation(
        model="demo",
        method=method,
        variant=method,
        layer="features",
        targets=list(targets),
        labels=[LABELS[t] for t in targets],
        heatmaps=heatmaps,
        empty=[False] * len(targets),
        raw=raw,
        scores=[ClassScore(i, LABELS[i], p, 1.0) for i, p in scores],
        cache_hit=False,
        timings=Timings(total_ms=3.0),
        metrics={},
        image_size=size,
        dtype="float32",
    )
