"""Resuming an ``index`` stream that ended with UNAVAILABLE, where it stopped.

A long ``IndexImages`` stream can be cut by the server's connection age (the stream
ends ``UNAVAILABLE: max connection age``), a restart or a network blip. Indexing is
idempotent (an image the set holds, by content hash, is skipped), so the SDK opens a
new stream and sends again only the images the server has not answered yet.
``SentLedger`` keeps those images; ``ResumePolicy`` decides whether and when to retry.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ResumePolicy:
    """Re-open a cut stream at most ``max_idle`` times in a row without an answered image.

    The wait before re-opening after ``n`` such attempts in a row is
    ``min(max_backoff_s, initial_backoff_s * 2**n)``, jittered down by up to half.
    A stream that got answers before it was cut resets the count, so a long call is
    resumed as often as its connections are cut.
    """

    max_idle: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    def delay(self, idle: int) -> float:
        """Seconds to wait before the next stream, after ``idle`` fruitless ones in a row."""
        full = min(self.max_backoff_s, self.initial_backoff_s * 2.0**idle)
        return full * (0.5 + random.random() / 2)


class SentLedger(Generic[T]):
    """Items in sending order, each taken from ``source`` once and kept until answered.

    Each stream sends from the first unanswered item on (``get(acknowledged)``,
    ``get(acknowledged + 1)``, ...): first the items an earlier stream sent without an
    answer, then new ones from the source. Taking from the source is serialised, so
    an item taken by the request thread of a stream already cut is kept for the next
    stream, never lost nor taken twice.
    """

    def __init__(self, source: Iterator[T]) -> None:
        self._source = source
        self._kept: deque[T] = deque()  # items acknowledged .. acknowledged + len - 1
        self._first = 0
        self._exhausted = False
        self._lock = threading.Lock()
        self._taking = threading.Lock()

    @property
    def acknowledged(self) -> int:
        """How many items, from the first, the server has answered."""
        with self._lock:
            return self._first

    @property
    def unanswered(self) -> int:
        """Items taken from the source and not answered yet."""
        with self._lock:
            return len(self._kept)

    def get(self, position: int) -> T | None:
        """Item number ``position``, taken from the source when new; None past its end
        (or for an item already answered: only a stream that was cut asks for one)."""
        found, known = self._known(position)
        if known:
            return found
        with self._taking:
            found, known = self._known(position)
            if known:
                return found
            item = next(self._source, None)
            with self._lock:
                if item is None:
                    self._exhausted = True
                    return None
                self._kept.append(item)
                return item if position == self._first + len(self._kept) - 1 else None

    def acknowledge(self, count: int) -> None:
        """The server answered the next ``count`` items."""
        with self._lock:
            for _ in range(min(count, len(self._kept))):
                self._kept.popleft()
                self._first += 1

    def _known(self, position: int) -> tuple[T | None, bool]:
        with self._lock:
            offset = position - self._first
            if offset < 0:
                return None, True
            if offset < len(self._kept):
                return self._kept[offset], True
            return None, self._exhausted


__all__ = ["ResumePolicy", "SentLedger"]
