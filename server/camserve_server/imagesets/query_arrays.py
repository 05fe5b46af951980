"""The whole-set arrays queries read, stacked once per version of a set.

Both backends keep one ``QueryArrays`` per version of a set (memory: until the set
changes; Redis: until its version counter moves), so each array is stacked from the
records once and every later query of that version reads the same objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .records import MemberRecord
from .store import Predictions


class QueryArrays:
    """One version of a set's records and the arrays stacked from them on first use.

    Not locked: each store calls it under its own lock.
    """

    def __init__(self, records: Sequence[MemberRecord]) -> None:
        self.records = records
        self._matrix: tuple[list[str], np.ndarray] | None = None
        self._columns: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {}
        self._predictions: Predictions | None = None

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """Member ids and their ``(N, D)`` float32 embeddings."""
        if self._matrix is None:
            self._matrix = stack_embeddings(self.records)
        return self._matrix

    def channel_column(self, layer: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Member ids, ``(N, C)`` channel maxima and ``(N, C, 2)`` their positions in ``layer``."""
        if layer not in self._columns:
            self._columns[layer] = stack_channels(self.records, layer)
        return self._columns[layer]

    def predictions(self) -> Predictions:
        """Every member's predicted class and probability."""
        if self._predictions is None:
            self._predictions = stack_predictions(self.records)
        return self._predictions


def stack_embeddings(records: Iterable[MemberRecord]) -> tuple[list[str], np.ndarray]:
    """Ids and the ``(N, D)`` float32 matrix of the records' embeddings."""
    ids: list[str] = []
    rows: list[np.ndarray] = []
    for record in records:
        ids.append(record.id)
        rows.append(record.embedding)
    if not rows:
        return ids, np.zeros((0, 0), dtype=np.float32)
    return ids, np.stack(rows).astype(np.float32, copy=False)


def stack_channels(
    records: Iterable[MemberRecord], layer: str
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Ids, ``(N, C)`` maxima and ``(N, C, 2)`` positions of ``layer`` over the records."""
    ids: list[str] = []
    maxima: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    for record in records:
        ids.append(record.id)
        maxima.append(record.maxima[layer])
        positions.append(record.positions[layer])
    if not ids:
        return ids, np.zeros((0, 0), np.float32), np.zeros((0, 0, 2), np.int32)
    return ids, np.stack(maxima).astype(np.float32), np.stack(positions).astype(np.int32)


def stack_predictions(records: Iterable[MemberRecord]) -> Predictions:
    """The records' predicted classes and probabilities, in the records' order."""
    ids: list[str] = []
    predicted: list[int] = []
    probability: list[float] = []
    for record in records:
        ids.append(record.id)
        predicted.append(record.predicted)
        probability.append(record.probability)
    return Predictions(
        ids=ids,
        predicted=np.asarray(predicted, dtype=np.int64),
        probability=np.asarray(probability, dtype=np.float32),
        row={member_id: i for i, member_id in enumerate(ids)},
    )


__all__ = ["QueryArrays", "stack_channels", "stack_embeddings", "stack_predictions"]
