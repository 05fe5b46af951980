"""Tier 1: an in-process LRU of activations, bounded in bytes. Thread-safe.

Values are kept as compact float32 CPU tensors; callers move them to their
device (a copy) and must treat the returned tensors as read-only.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .cache_format import CachedActivation, CacheKey
from .cache_observer import NULL_OBSERVER, CacheObserver, TierCounters, TierStats

MIB = 1 << 20
ENTRY_OVERHEAD = 256  # bytes charged per entry for the key, tensor headers and bookkeeping


@dataclass(frozen=True)
class _Entry:
    value: CachedActivation
    size: int
    expires: float | None


class MemoryCache:
    """LRU cache of ``CachedActivation`` holding at most ``max_bytes``; optional TTL."""

    def __init__(
        self,
        max_bytes: int = 512 * MIB,
        *,
        ttl_s: float | None = None,
        observer: CacheObserver = NULL_OBSERVER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._nbytes = 0
        self.counters = TierCounters("memory", observer)

    def get(self, key: CacheKey | str) -> CachedActivation | None:
        """The value under ``key`` (now the most recently used), or ``None``."""
        k = str(key)
        with self._lock:
            entry = self._entries.get(k)
            if entry is not None and entry.expires is not None and self._clock() >= entry.expires:
                self._remove(k)
                entry = None
            if entry is not None:
                self._entries.move_to_end(k)
        if entry is None:
            self.counters.miss()
            return None
        self.counters.hit()
        return entry.value

    def put(self, key: CacheKey | str, value: CachedActivation) -> bool:
        """Store ``value``, evicting least recently used entries; ``False`` if it cannot fit."""
        k = str(key)
        value = value.compact()
        size = value.nbytes + len(k) + ENTRY_OVERHEAD
        expires = None if self.ttl_s is None else self._clock() + self.ttl_s
        with self._lock:
            if k in self._entries:
                self._remove(k)
            if size > self.max_bytes:
                return False
            while self._nbytes + size > self.max_bytes:
                self._remove(next(iter(self._entries)))
            self._entries[k] = _Entry(value, size, expires)
            self._nbytes += size
        self.counters.wrote()
        return True

    def delete(self, key: CacheKey | str) -> None:
        """Forget ``key`` if present."""
        with self._lock:
            if str(key) in self._entries:
                self._remove(str(key))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    def _remove(self, k: str) -> None:
        self._nbytes -= self._entries.pop(k).size

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes charged for the entries held."""
        with self._lock:
            return self._nbytes

    def stats(self) -> TierStats:
        with self._lock:
            entries, nbytes = len(self._entries), self._nbytes
        return self.counters.snapshot(entries=entries, nbytes=nbytes)
