"""How cache tiers report hits, misses and errors, without importing any metrics library.

The server passes its ``Metrics`` (which has ``on_hit``, ``on_miss`` and
``on_error``); tests and tools use the no-op default. Each tier also keeps its
own counters, read back with ``stats()``.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Protocol

Tier = Literal["memory", "redis"]
ErrorKind = Literal[
    "timeout",  # Redis did not answer within the socket timeout
    "connection",  # Redis unreachable or the connection broke
    "redis",  # Redis answered with an error (out of memory, wrong type...)
    "decode",  # a stored blob is not a valid value
    "foreign",  # a valid value written under another key (another image's), not served
    "shape",  # a value whose shapes do not fit the model and layer of its key, not served
    "unsigned",  # an unsigned value read with a cache secret, not served
    "signature",  # a signature that does not verify (another secret, tampering), not served
    "breaker_open",  # Redis skipped while the circuit breaker is open
    "dropped_write",  # background write backlog full, or left behind at close
    "too_large",  # value over the per-value size cap, not written
    "unexpected",  # anything else (a bug); logged with its traceback
]


class CacheObserver(Protocol):
    """Receives every cache outcome; ``tier`` is "memory" or "redis"."""

    def on_hit(self, tier: str) -> None: ...

    def on_miss(self, tier: str) -> None: ...

    def on_error(self, tier: str, kind: str) -> None: ...


class NullObserver:
    """An observer that ignores everything."""

    def on_hit(self, tier: str) -> None:
        pass

    def on_miss(self, tier: str) -> None:
        pass

    def on_error(self, tier: str, kind: str) -> None:
        pass


NULL_OBSERVER = NullObserver()


@dataclass(frozen=True)
class TierStats:
    """A snapshot of one tier's counters and state."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    entries: int = 0  # memory: values held
    nbytes: int = 0  # memory: bytes held
    pending_writes: int = 0  # redis: writes waiting for the background thread
    breaker: str = "closed"  # redis: "closed", "open" or "half_open"

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


class TierCounters:
    """Counts one tier's outcomes and forwards each to the observer. Thread-safe."""

    def __init__(self, tier: Tier, observer: CacheObserver = NULL_OBSERVER) -> None:
        self.tier = tier
        self.observer = observer
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._writes = 0
        self._errors: Counter[str] = Counter()

    def hit(self) -> None:
        with self._lock:
            self._hits += 1
        self.observer.on_hit(self.tier)

    def miss(self) -> None:
        with self._lock:
            self._misses += 1
        self.observer.on_miss(self.tier)

    def wrote(self) -> None:
        with self._lock:
            self._writes += 1

    def error(self, kind: ErrorKind, count: int = 1) -> None:
        with self._lock:
            self._errors[kind] += count
        for _ in range(count):
            self.observer.on_error(self.tier, kind)

    def snapshot(
        self, *, entries: int = 0, nbytes: int = 0, pending_writes: int = 0, breaker: str = "closed"
    ) -> TierStats:
        with self._lock:
            return TierStats(
                hits=self._hits,
                misses=self._misses,
                writes=self._writes,
                errors=dict(self._errors),
                entries=entries,
                nbytes=nbytes,
                pending_writes=pending_writes,
                breaker=breaker,
            )
