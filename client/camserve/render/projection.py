"""Feature vectors (N, D) projected to 2-D: PCA always, t-SNE with scikit-learn."""

from __future__ import annotations

import importlib

import numpy as np
import numpy.typing as npt

from camserve.render._mpl import PLOTS_EXTRA_HINT


def _features(features: npt.ArrayLike) -> npt.NDArray[np.float64]:
    values = np.asarray(features, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("features must be finite")
    return values


def pca_2d(features: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The (N, 2) projection of centred features onto their first two principal axes.

    Each axis's sign is fixed so that its largest-magnitude loading is positive, so
    the result does not depend on the SVD routine. Missing axes (N or D < 2) are 0.
    Plain numpy, not the server's scikit-learn PCA: the SDK depends on neither of them.
    """
    values = _features(features)
    result = np.zeros((values.shape[0], 2))
    if values.shape[0] < 2 or values.shape[1] == 0:
        return result
    centred = values - values.mean(axis=0)
    axes = np.linalg.svd(centred, full_matrices=False)[2][:2]
    peaks = axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)]
    result[:, : len(axes)] = centred @ (axes * np.where(peaks < 0, -1.0, 1.0)[:, None]).T
    return result


def tsne_2d(
    features: npt.ArrayLike, seed: int = 0, *, perplexity: float | None = None
) -> npt.NDArray[np.float64]:
    """A (N, 2) t-SNE embedding (scikit-learn, PCA initialisation, seeded).

    ``perplexity`` defaults to ``min(30, (N - 1) / 3)`` (at least 1). Raises
    ImportError where scikit-learn is not installed.
    """
    try:
        manifold = importlib.import_module("sklearn.manifold")
    except ImportError as exc:
        raise ImportError(f"t-SNE needs scikit-learn; {PLOTS_EXTRA_HINT}") from exc
    values = _features(features)
    count = values.shape[0]
    if count < 2:
        return np.zeros((count, 2))
    if perplexity is None:
        perplexity = max(1.0, min(30.0, (count - 1) / 3.0))
    model = manifold.TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return np.asarray(model.fit_transform(values), dtype=np.float64)
