"""Questions about an indexed set: maximally activating patches and nearest neighbours.

- ``top_activating``: the ``k`` members whose channel maximum ``max_{i,j} A[c, i, j]`` is
  highest, each with the receptive-field box of its maximal unit, the patch of the input
  that unit sees (Zeiler & Fergus 2014; the cs231n "maximally activating patches" figure).
- ``nearest``: exact ``k`` nearest neighbours by cosine distance ``1 - q.m / (|q| |m|)``
  on embeddings, one ``(Q, D) x (D, N)`` matrix product on the device (the "CNN codes"
  neighbours of Krizhevsky et al. 2012), or by Euclidean distance on small pixel
  thumbnails, the baseline that shows features are semantic and pixels are not.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..errors import InvalidArgument
from .query_arguments import one_of
from .receptive_field import ReceptiveField, cached_receptive_field
from .store import SetStore, member_not_found

MAX_K = 1000
Space = Literal["features", "pixels"]
SPACES: tuple[Space, ...] = ("features", "pixels")


@dataclass(frozen=True)
class TopItem:
    """A member, its channel maximum, where it was in the layer's map, and the field's box."""

    id: str
    activation: float
    position: tuple[int, int]  # (row, col) in the layer's map
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), ends exclusive, in input pixels


@dataclass(frozen=True)
class Neighbour:
    """A member and its distance to the query (cosine distance or pixel L2)."""

    id: str
    distance: float


def check_k(k: int) -> int:
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidArgument(f"k must be in [1, {MAX_K}], got {k!r}")
    return k


def top_activating(
    store: SetStore,
    name: str,
    layer: str,
    channel: int,
    k: int,
    *,
    field: ReceptiveField | None = None,
) -> list[TopItem]:
    """The ``k`` members with the highest maximum of ``channel`` in ``layer``, highest first.

    ``field`` is the layer's receptive field (default: the one measured for the set's model
    in this process by ``receptive_field``); boxes are clipped to the model's input size.
    Ties are broken by id, so the answer is deterministic.
    """
    check_k(k)
    info = store.get(name)
    ids, maxima, positions = store.channel_column(name, layer)
    channels = maxima.shape[1] if maxima.ndim == 2 else 0
    if not isinstance(channel, int) or not 0 <= channel < max(channels, 1):
        raise InvalidArgument(
            f"channel must be in [0, {channels}) for layer {layer!r}, got {channel!r}"
        )
    if not ids:
        return []
    field = field or cached_receptive_field(info.model, layer)
    column = maxima[:, channel]
    candidates: list[int] = list(range(len(ids)))
    if len(ids) > 4 * k:  # select first: O(N) rather than sorting every member
        threshold = column[np.argpartition(-column, k - 1)[:k]].min()
        candidates = np.flatnonzero(column >= threshold).tolist()
    order = sorted(candidates, key=lambda i: (-float(column[i]), ids[i]))[:k]
    items = []
    for i in order:
        row, col = int(positions[i, channel, 0]), int(positions[i, channel, 1])
        items.append(
            TopItem(
                id=ids[i],
                activation=float(column[i]),
                position=(row, col),
                box=field.box(row, col, field.input_hw),
            )
        )
    return items


def nearest(
    store: SetStore,
    name: str,
    query: np.ndarray | str,
    k: int,
    space: str = "features",
    *,
    device: torch.device | str = "cpu",
) -> list[Neighbour]:
    """The ``k`` members nearest ``query``, nearest first.

    ``query`` is a member id (that member is left out of the answer), an embedding
    ``(D,)`` for ``space="features"``, or a uint8 thumbnail ``(h, w, 3)`` for ``"pixels"``.
    """
    check_k(k)
    one_of("space", space, SPACES)
    exclude: str | None = None
    if isinstance(query, str):
        exclude = query
        member = store.member(name, query)
        if space == "features":
            query = member.embedding
        elif member.pixels is None:
            raise InvalidArgument(f"member {exclude!r} of set {name!r} kept no pixel thumbnail")
        else:
            query = member.pixels
    if space == "features":
        ids, matrix = store.matrix(name)
        vectors = normalised(matrix, device)
        q = np.asarray(query, dtype=np.float32).reshape(1, -1)
        distances = cosine_distances(vectors, q)[0]
    else:
        ids, pixels = pixel_matrix(store, name)
        distances = pixel_distances(pixels, np.asarray(query))
    if not ids:
        return []
    if exclude is not None and exclude not in ids:
        raise member_not_found(name, exclude)
    candidates: list[int] = list(range(len(ids)))
    if len(ids) > 4 * (k + 1):  # select first: O(N) rather than sorting every member
        threshold = distances[np.argpartition(distances, k)[: k + 1]].max()
        candidates = np.flatnonzero(distances <= threshold).tolist()
    keep = [i for i in candidates if ids[i] != exclude]
    order = sorted(keep, key=lambda i: (float(distances[i]), ids[i]))[:k]
    return [Neighbour(id=ids[i], distance=float(distances[i])) for i in order]


_normalised_cache: dict[tuple[int, str], tuple[np.ndarray, torch.Tensor]] = {}
_cache_lock = threading.Lock()


def normalised(matrix: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """The rows of ``matrix`` scaled to unit length, on ``device``; cached per matrix object.

    Stores hand out the same matrix object until the set changes, so each set version is
    normalised and copied to the device once.
    """
    key = (id(matrix), str(device))
    with _cache_lock:
        found = _normalised_cache.get(key)
        if found is not None and found[0] is matrix:
            return found[1]
    tensor = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)).to(device)
    tensor = torch.nn.functional.normalize(tensor, dim=1) if tensor.numel() else tensor
    with _cache_lock:
        if len(_normalised_cache) >= 16:
            _normalised_cache.pop(next(iter(_normalised_cache)))
        _normalised_cache[key] = (matrix, tensor)
    return tensor


def cosine_distances(vectors: torch.Tensor, queries: np.ndarray) -> np.ndarray:
    """``1 - cos`` between each of ``queries`` ``(Q, D)`` and unit rows ``vectors`` ``(N, D)``."""
    if vectors.numel() == 0:
        return np.zeros((queries.shape[0], 0), dtype=np.float32)
    if queries.shape[1] != vectors.shape[1]:
        raise InvalidArgument(
            f"the query embedding has {queries.shape[1]} values, the set's have {vectors.shape[1]}"
        )
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(vectors.device)
    q = torch.nn.functional.normalize(q, dim=1)
    with torch.inference_mode():
        return (1.0 - q @ vectors.T).clamp_(0.0, 2.0).cpu().numpy()


def cosine_search(
    vectors: torch.Tensor, queries: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` by cosine for a batch of unit-length ``queries``: distances, indices.

    ``Q * N * D`` multiply-adds; the whole search is one GEMM and one ``topk``.
    """
    with torch.inference_mode():
        similarity, index = torch.topk(queries @ vectors.T, min(k, vectors.shape[0]), dim=1)
    return 1.0 - similarity, index


def pixel_matrix(store: SetStore, name: str) -> tuple[list[str], np.ndarray]:
    """Ids and ``(N, h*w*3)`` float32 thumbnails in [0, 1] of the members that kept one."""
    ids: list[str] = []
    rows: list[np.ndarray] = []
    for member in store.members(name):
        if member.pixels is not None:
            ids.append(member.id)
            rows.append(member.pixels.reshape(-1).astype(np.float32) / 255.0)
    if not rows:
        return ids, np.zeros((0, 0), dtype=np.float32)
    return ids, np.stack(rows)


def pixel_distances(pixels: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Euclidean distance between a uint8 thumbnail and each row of ``pixels`` (in [0, 1])."""
    if pixels.size == 0:
        return np.zeros(0, dtype=np.float32)
    q = query.reshape(-1).astype(np.float32) / 255.0
    if q.shape[0] != pixels.shape[1]:
        raise InvalidArgument(
            f"the query thumbnail has {q.shape[0]} values, the set's have {pixels.shape[1]}"
        )
    return np.asarray(np.sqrt(((pixels - q[None, :]) ** 2).sum(axis=1)), dtype=np.float32)
