"""A circuit breaker, so a slow or absent Redis costs requests nothing while it is down.

Closed: calls go through. After ``threshold`` consecutive failures it opens for
``cooldown_s``: calls are refused at once. Then it half-opens and lets one
trial call through; success closes it, failure opens it for another cool-down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

log = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive-failure circuit breaker. Thread-safe; ``clock`` is injectable for tests."""

    def __init__(
        self,
        threshold: int = 5,
        cooldown_s: float = 5.0,
        *,
        name: str = "redis",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or cooldown_s < 0:
            raise ValueError("threshold must be >= 1 and cooldown_s >= 0")
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._state: BreakerState = "closed"
        self._since = 0.0  # when it opened, or when the half-open trial started

    @property
    def state(self) -> BreakerState:
        """The state now; an open breaker whose cool-down has passed reads "half_open"."""
        with self._lock:
            if self._state == "open" and self._clock() - self._since >= self.cooldown_s:
                return "half_open"
            return self._state

    def allow(self) -> bool:
        """Whether a call may go ahead; a ``True`` must be followed by ``success``/``failure``."""
        with self._lock:
            if self._state == "closed":
                return True
            now = self._clock()
            # Open past its cool-down, or a half-open trial that never reported back.
            if now - self._since >= self.cooldown_s:
                self._state = "half_open"
                self._since = now
                return True
            return False

    def success(self) -> None:
        """The call reached the server; closes the breaker."""
        with self._lock:
            if self._state != "closed":
                log.info("%s circuit breaker closed", self.name)
            self._state = "closed"
            self._failures = 0

    def failure(self) -> None:
        """The call timed out or could not connect."""
        with self._lock:
            self._failures += 1
            if self._state == "half_open" or (
                self._state == "closed" and self._failures >= self.threshold
            ):
                log.warning(
                    "%s circuit breaker open for %.1f s after %d consecutive failures",
                    self.name,
                    self.cooldown_s,
                    self._failures,
                )
                self._state = "open"
                self._since = self._clock()
