"""The in-process ``SetStore``: sets in a dict, bounded in bytes across all sets. Thread-safe.

Each member is charged the size of its encoded record (see ``records``) plus a fixed
overhead, the same figure the Redis backend charges, so ``bytes_used`` means the same
in both. Unlike the activation cache nothing is evicted: a set is data the caller
indexed on purpose, so a full store refuses the write with ``SetFull``.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .query_arrays import QueryArrays
from .records import MemberRecord, SetFull, SetInfo, check_set_name, encode_record
from .store import (
    DEFAULT_MAX_BYTES,
    Predictions,
    check_create,
    check_layer,
    check_room,
    member_not_found,
    record_cost,
    set_not_found,
)


@dataclass
class _Set:
    info: SetInfo
    members: dict[str, tuple[MemberRecord, int]] = field(default_factory=dict)  # id -> (r, cost)
    by_hash: dict[str, str] = field(default_factory=dict)  # image hash -> id
    stacked: QueryArrays | None = None  # None until a query reads the set as it is now

    def changed(self) -> None:
        self.stacked = None

    def arrays(self) -> QueryArrays:
        """The query arrays of the set as it is now."""
        if self.stacked is None:
            self.stacked = QueryArrays([record for record, _ in self.members.values()])
        return self.stacked


class MemorySetStore:
    """Image sets held in this process, at most ``max_bytes`` charged across all of them."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sets: dict[str, _Set] = {}

    @property
    def nbytes(self) -> int:
        """Bytes charged across every set."""
        with self._lock:
            return sum(s.info.bytes_used for s in self._sets.values())

    def create(self, info: SetInfo) -> None:
        check_set_name(info.name)
        with self._lock:
            existing = self._sets.get(info.name)
            if check_create(existing.info if existing else None, info):
                fresh = replace(info, size=0, bytes_used=0, created=info.created or time.time())
                self._sets[info.name] = _Set(fresh)

    def get(self, name: str) -> SetInfo:
        with self._lock:
            return self._set(name).info

    def list(self) -> builtins.list[SetInfo]:
        with self._lock:
            return [self._sets[name].info for name in sorted(self._sets)]

    def delete(self, name: str) -> int:
        with self._lock:
            freed = self._set(name).info.bytes_used
            del self._sets[name]
            return freed

    def has(self, name: str, image_hash: str) -> str | None:
        with self._lock:
            return self._set(name).by_hash.get(image_hash)

    def add(self, name: str, records: builtins.list[MemberRecord]) -> None:
        costs = [record_cost(len(encode_record(r)), r.id) for r in records]
        with self._lock:
            entry = self._set(name)
            for record, cost in zip(records, costs, strict=True):
                old = entry.members.get(record.id)
                old_cost = old[1] if old else 0
                check_room(entry.info, 0 if old else 1, cost - old_cost)
                total = sum(s.info.bytes_used for s in self._sets.values())
                if total + cost - old_cost > self.max_bytes:
                    raise SetFull(
                        f"the in-process image-set store holds {total} of at most "
                        f"{self.max_bytes} bytes; cannot add {record.id!r} to {name!r} "
                        "(delete a set, or configure Redis for larger sets)"
                    )
                if old is not None:
                    entry.by_hash.pop(old[0].image_hash, None)
                entry.members[record.id] = (record, cost)
                entry.by_hash[record.image_hash] = record.id
                entry.info = replace(
                    entry.info,
                    size=len(entry.members),
                    bytes_used=entry.info.bytes_used + cost - old_cost,
                )
                entry.changed()

    def members(self, name: str) -> Iterator[MemberRecord]:
        with self._lock:
            records = [record for record, _ in self._set(name).members.values()]
        return iter(records)

    def matrix(self, name: str) -> tuple[builtins.list[str], np.ndarray]:
        with self._lock:
            return self._set(name).arrays().matrix()

    def channel_column(
        self, name: str, layer: str
    ) -> tuple[builtins.list[str], np.ndarray, np.ndarray]:
        with self._lock:
            entry = self._set(name)
            check_layer(entry.info, layer)
            return entry.arrays().channel_column(layer)

    def predictions(self, name: str) -> Predictions:
        with self._lock:
            return self._set(name).arrays().predictions()

    def images(self, name: str, ids: Sequence[str]) -> builtins.list[bytes]:
        with self._lock:
            members = self._set(name).members
            found = [members.get(member_id) for member_id in ids]
        for member_id, entry in zip(ids, found, strict=True):
            if entry is None:
                raise member_not_found(name, member_id)
        return [entry[0].image for entry in found if entry is not None]

    def member(self, name: str, member_id: str) -> MemberRecord:
        with self._lock:
            found = self._set(name).members.get(member_id)
        if found is None:
            raise member_not_found(name, member_id)
        return found[0]

    def close(self) -> None:
        """Nothing to release."""

    def _set(self, name: str) -> _Set:
        entry = self._sets.get(name)
        if entry is None:
            raise set_not_found(name)
        return entry
