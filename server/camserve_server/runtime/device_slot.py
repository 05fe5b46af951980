"""One computation at a time per device, handed out in priority order.

Every piece of device work holds the device's slot while it runs: an
explanation batch (``LIGHT``), one chunk of a heavy method (``HEAVY``), one step
of a job or one indexing batch (``BACKGROUND``). Work of a higher priority
(a lower number) that is waiting goes first when the slot is released, and a
heavy method gives the slot up between its chunks whenever lighter work waits
(``yield_to_waiting``). So a long occlusion or Score-CAM request delays a
Grad-CAM request by at most one chunk, never by its whole duration, and the
device never runs two batches at once (memory stays within one batch's budget).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from enum import IntEnum


class Priority(IntEnum):
    """Who goes first when the device frees up: the lowest value."""

    LIGHT = 0
    HEAVY = 1
    BACKGROUND = 2


class DeviceSlot:
    """A priority lock: waiters of a higher priority are served before lower ones."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._held = False
        self._waiting = [0] * len(Priority)

    def acquire(self, priority: Priority) -> None:
        """Block until the slot is free and no higher-priority work is waiting."""
        with self._condition:
            self._waiting[priority] += 1
            try:
                while self._held or any(self._waiting[p] for p in range(priority)):
                    self._condition.wait()
            finally:
                self._waiting[priority] -= 1
            self._held = True

    def release(self) -> None:
        with self._condition:
            self._held = False
            self._condition.notify_all()

    @contextlib.contextmanager
    def hold(self, priority: Priority) -> Iterator[None]:
        """Hold the slot for the duration of the block."""
        self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    def waiting_above(self, priority: Priority) -> bool:
        """Whether work of a strictly higher priority is waiting for the slot."""
        with self._condition:
            return any(self._waiting[p] for p in range(priority))

    def yield_to_waiting(self, priority: Priority) -> bool:
        """From a holder of ``priority``: let waiting higher-priority work run, then resume.

        Returns whether the slot was given up. The caller must hold the slot.
        """
        if not self.waiting_above(priority):
            return False
        self.release()
        self.acquire(priority)
        return True
