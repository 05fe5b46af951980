"""A 2-D map of a set's embeddings: PCA, or t-SNE (van der Maaten & Hinton 2008).

PCA projects the centred embeddings ``X - mean`` on their two leading right singular
vectors (``X = U S V^T``, coordinates ``U[:, :2] S[:2]``, scikit-learn's ``PCA``), signs
fixed so the answer is deterministic. t-SNE matches pairwise neighbour probabilities
``p_ij`` (Gaussian, set by the perplexity) with a Student-t ``q_ij`` in 2-D by
minimising ``KL(P || Q)``; for large or wide sets it runs on the 50-component PCA
reduction, as cs231n's t-SNE of CNN codes does, with scikit-learn's Barnes-Hut solver
(``O(N log N)`` per iteration).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ..errors import InvalidArgument

Method = Literal["pca", "tsne"]
METHODS: tuple[Method, ...] = ("pca", "tsne")
PCA_BEFORE_TSNE = 50
MAX_TSNE_POINTS = 50_000
EXACT_SVD_LIMIT = 512  # wider and taller than this: randomised SVD
MIN_TSNE_POINTS = 5
SMALL_TSNE = 2000  # below this a perplexity cannot be set; PCA is used instead


def embedding_map(
    ids: Sequence[str], matrix: np.ndarray, method: str = "tsne", seed: int = 0
) -> np.ndarray:
    """``(N, 2)`` float32 coordinates of each row of ``matrix`` (one per id), by ``method``."""
    if method not in METHODS:
        raise InvalidArgument(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if len(ids) != matrix.shape[0]:
        raise InvalidArgument(f"{len(ids)} ids for {matrix.shape[0]} embeddings")
    n = matrix.shape[0]
    if n == 0:
        return np.zeros((0, 2), dtype=np.float32)
    x = np.asarray(matrix, dtype=np.float32).reshape(n, -1)
    if method == "pca" or n < MIN_TSNE_POINTS:
        return pca(x, 2)
    if n > MAX_TSNE_POINTS:
        raise InvalidArgument(
            f"t-SNE maps at most {MAX_TSNE_POINTS} images, the set has {n}; use method='pca'"
        )
    return tsne(x, seed)


def pca(x: np.ndarray, components: int) -> np.ndarray:
    """The first ``components`` principal coordinates of the rows of ``x`` (zero-padded).

    scikit-learn's PCA: an exact SVD, or its randomised SVD (Halko et al. 2011, seeded)
    when ``x`` is wider and taller than ``EXACT_SVD_LIMIT``. Each component's sign is
    fixed so that its largest loading is positive.
    """
    from sklearn.decomposition import PCA  # imported on use, as in tsne

    out = np.zeros((x.shape[0], components), dtype=np.float32)
    kept = min(components, *x.shape) if x.shape[0] > 1 else 0
    if kept == 0:
        return out
    values = np.asarray(x, dtype=np.float64)
    solver = "randomized" if min(values.shape) > EXACT_SVD_LIMIT else "full"
    model = PCA(n_components=kept, svd_solver=solver, random_state=0)
    with np.errstate(divide="ignore", invalid="ignore"):  # constant rows: no variance
        coords = model.fit_transform(values)
    loadings = model.components_
    peaks = loadings[np.arange(kept), np.abs(loadings).argmax(axis=1)]
    out[:, :kept] = coords * np.where(peaks < 0, -1.0, 1.0)
    return out


def tsne(x: np.ndarray, seed: int) -> np.ndarray:
    """t-SNE in 2-D of the rows of ``x`` (PCA-50 first when wider), deterministic for ``seed``."""
    # Imported on use: the server starts without them loaded.
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    reduced = pca(x, PCA_BEFORE_TSNE) if x.shape[1] > PCA_BEFORE_TSNE else x
    perplexity = float(min(30.0, (x.shape[0] - 1) / 3))
    # Small maps run on one thread: spinning OpenMP workers next to the device workers
    # cost far more than they save below a few thousand points.
    threads = 1 if x.shape[0] < SMALL_TSNE else None
    with threadpool_limits(limits=threads):
        coords = TSNE(
            n_components=2,
            perplexity=perplexity,
            init="pca",
            learning_rate="auto",
            random_state=seed,
        ).fit_transform(reduced.astype(np.float32))
    return np.asarray(coords, dtype=np.float32)
