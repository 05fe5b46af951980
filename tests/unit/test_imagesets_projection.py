"""The server's PCA: principal coordinates with a fixed sign, exact or randomised by size."""

from __future__ import annotations

import warnings

import numpy as np

from camserve_server.imagesets.projection import EXACT_SVD_LIMIT, pca


def _reference(x: np.ndarray, components: int) -> np.ndarray:
    """Principal coordinates by numpy's SVD, each axis's largest loading made positive."""
    centred = x.astype(np.float64) - x.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    peaks = vt[np.arange(components), np.abs(vt[:components]).argmax(axis=1)]
    coords: np.ndarray = u[:, :components] * s[:components] * np.where(peaks < 0, -1.0, 1.0)
    return coords


def _low_rank(rows: int, columns: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((rows, 3)) * [30.0, 20.0, 10.0] @ rng.standard_normal((3, columns))
    return (signal + 0.01 * rng.standard_normal((rows, columns))).astype(np.float32)


def test_small_inputs_match_the_exact_svd_with_its_sign_fixed() -> None:
    x = _low_rank(40, 12, seed=0)
    coords = pca(x, 3)
    assert coords.shape == (40, 3) and coords.dtype == np.float32
    np.testing.assert_allclose(coords, _reference(x, 3), rtol=1e-4, atol=1e-3)


def test_large_inputs_take_the_seeded_randomised_solver() -> None:
    x = _low_rank(EXACT_SVD_LIMIT + 40, EXACT_SVD_LIMIT + 8, seed=1)
    coords = pca(x, 2)
    np.testing.assert_array_equal(coords, pca(x, 2))
    np.testing.assert_allclose(coords, _reference(x, 2), rtol=1e-3, atol=1e-2)


def test_missing_components_are_zero_and_degenerate_inputs_quiet() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not pca(np.ones((1, 4), np.float32), 2).any()
        assert not pca(np.ones((5, 4), np.float32), 2).any()
        narrow = pca(np.arange(5, dtype=np.float32)[:, None], 2)
    np.testing.assert_array_equal(narrow[:, 1], 0)
    np.testing.assert_allclose(narrow[:, 0], [-2, -1, 0, 1, 2], atol=1e-6)
