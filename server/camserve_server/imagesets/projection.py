"""A 2-D map of a set's embeddings: PCA, or t-SNE (van der Maaten & Hinton 2008).

PCA projects the centred embeddings ``X - mean`` on their two leading right singular
vectors (``X = U S V^T``, coordinates ``U[:, :2] S[:2]``), signs fixed so the answer is
deterministic. t-SNE matches pairwise neighbour probabilities ``p_ij`` (Gaussian, set
by the perplexity) with a Student-t ``q_ij`` in 2-D by minimising ``KL(P || Q)``; for
large or wide sets it runs on the 50-component PCA reduction, as cs231n's t-SNE of
CNN codes does, with scikit-learn's Barnes-Hut solver (``O(N log N)`` per iteration).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

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
    """The first ``components`` principal coordinates of the rows of ``x`` (zero-padded)."""
    n = x.shape[0]
    centred = torch.from_numpy(x).double()
    centred = centred - centred.mean(dim=0, keepdim=True)
    if min(centred.shape) > EXACT_SVD_LIMIT:  # randomised SVD (Halko et al. 2011), seeded
        with torch.random.fork_rng():
            torch.manual_seed(0)
            u, s, v = torch.svd_lowrank(centred, q=min(components + 10, min(centred.shape)))
        vh = v.T
    else:
        u, s, vh = torch.linalg.svd(centred, full_matrices=False)
    kept = min(components, s.shape[0])
    # Fix each component's sign: its largest loading is positive.
    signs = torch.sign(vh[:kept].gather(1, vh[:kept].abs().argmax(dim=1, keepdim=True))).T
    signs[signs == 0] = 1.0
    coords = (u[:, :kept] * s[:kept] * signs).float().numpy()
    out = np.zeros((n, components), dtype=np.float32)
    out[:, :kept] = coords
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
