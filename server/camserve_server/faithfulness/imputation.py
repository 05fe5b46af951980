"""Noisy linear imputation (Rong et al. 2022, ROAD), as pytorch-grad-cam's
``NoisyLinearImputer``: removed pixels are filled from the pixels kept around them.

Every removed pixel ``v_i`` of every channel equals the weighted mean of its 8 neighbours
inside the image (weight 1/6 for the 4 sharing a side, 1/12 for the 4 diagonal ones,
kept neighbours at their values): one sparse linear system per image, solved exactly.
Then ``N(0, noise^2)`` is added to each filled value, so that the fill does not reveal
which pixels were removed. The noise comes from the caller's generator, drawn in the
reference's order (``randn_like`` of the transposed solution), so a generator seeded as
the reference's global one gives the same image.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

NOISE = 0.01
NEIGHBOUR_WEIGHTS = (
    ((1, 1), 1 / 12),
    ((0, 1), 1 / 6),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((0, -1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((-1, 0), 1 / 6),
)


def noisy_linear_imputation(
    image: torch.Tensor,
    keep: npt.NDArray[np.bool_],
    generator: torch.Generator | None,
    noise: float = NOISE,
) -> torch.Tensor:
    """``image`` ``(C, H, W)`` (float32, CPU) with the pixels where ``keep`` ``(H, W)`` is
    False imputed. With no pixel kept there is nothing to interpolate: the fill is 0 (the
    normalised input's mean) plus the noise, where the reference's system is singular."""
    channels = image.shape[0]
    flat = image.reshape(channels, -1)
    missing = np.flatnonzero(~keep.reshape(-1))
    filled = flat.clone()
    if missing.size == 0:
        return filled.reshape_as(image)
    if missing.size == keep.size:
        solution = torch.zeros((missing.size, channels), dtype=torch.float32)
    else:
        values = _solve(flat.numpy(), keep, missing)
        solution = torch.tensor(values, dtype=torch.float32)
    fill = solution.t()
    if noise:
        fill = fill + noise * torch.empty_like(fill).normal_(0, 1, generator=generator)
    filled[:, torch.from_numpy(missing)] = fill
    return filled.reshape_as(image)


def _solve(
    flat: npt.NDArray[np.float32], keep: npt.NDArray[np.bool_], missing: npt.NDArray[np.intp]
) -> npt.NDArray[np.float64]:
    """The removed pixels' values ``(M, C)``: ``-s_i v_i + sum_j w_ij v_j = -sum_k w_ik x_k``
    over removed neighbours ``j`` and kept neighbours ``k``, ``s_i`` the weight of the
    neighbours inside the image."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    height, width = keep.shape
    kept = keep.reshape(-1)
    unknown = np.zeros(kept.size, dtype=np.intp)
    unknown[missing] = np.arange(missing.size)
    row, column = np.divmod(missing, width)
    inside_weight = np.ones(missing.size)
    right_side = np.zeros((missing.size, flat.shape[0]))
    rows, columns, weights = [], [], []
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS:
        y, x = row + dy, column + dx
        inside = (y >= 0) & (x >= 0) & (y < height) & (x < width)
        inside_weight[~inside] -= weight
        equation = np.flatnonzero(inside)
        neighbour = y[inside] * width + x[inside]
        known = kept[neighbour]
        right_side[equation[known]] -= weight * flat[:, neighbour[known]].T
        rows.append(equation[~known])
        columns.append(unknown[neighbour[~known]])
        weights.append(np.full(int((~known).sum()), weight))
    diagonal = np.arange(missing.size)
    system = coo_matrix(
        (
            np.concatenate([*weights, -inside_weight]),
            (np.concatenate([*rows, diagonal]), np.concatenate([*columns, diagonal])),
        ),
        shape=(missing.size, missing.size),
    ).tocsc()
    solution = spsolve(system, right_side)
    return np.asarray(solution, dtype=np.float64).reshape(missing.size, flat.shape[0])
