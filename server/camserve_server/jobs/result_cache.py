"""Finished jobs kept in memory, least recently used first out, within a byte budget.

A job is deterministic given its key (model and weights, method, validated
options, seed, target, layer, channel, and hashes of its input images), so a
repeated request is answered from here without running a step. Values are
plain numpy arrays made by this process: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FinishedJob:
    """A job's outcome on the CPU as numpy: what a result is formatted from."""

    tensor: FloatArray  # (3, H, W), normalised input space
    images: Mapping[str, FloatArray]  # named extra images, normalised
    trace: tuple[float, ...]
    logits: FloatArray  # (num_classes,)
    extra_logits: Mapping[str, FloatArray] = field(default_factory=dict)
    layer: str = ""

    @property
    def nbytes(self) -> int:
        arrays = [self.tensor, self.logits, *self.images.values(), *self.extra_logits.values()]
        return sum(int(a.nbytes) for a in arrays) + 8 * len(self.trace)


def job_key(parts: Mapping[str, Any]) -> str:
    """A stable hex digest of a job's identifying parts (sorted by name, ``repr`` of each)."""
    digest = hashlib.sha256()
    for name in sorted(parts):
        digest.update(f"{name}={parts[name]!r};".encode())
    return digest.hexdigest()


class ResultCache:
    """A thread-safe LRU of ``FinishedJob`` by key, holding at most ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._entries: OrderedDict[str, FinishedJob] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> FinishedJob | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: FinishedJob) -> None:
        """Keep ``value``; evict the least recently used until within budget.

        A value larger than the whole budget is not kept.
        """
        size = value.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
