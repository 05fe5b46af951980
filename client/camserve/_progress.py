"""A one-line progress bar on stderr, drawn only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``bar(done, total)`` redraws ``label [#####.....] done/total``; ``close()`` ends the line.

    Drawn only when ``enabled`` (default: the stream is a terminal and there is more
    than one step), at most ten times a second, and always at the last step.
    """

    width = 30

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        offset: int = 0,
    ) -> None:
        self.label = label
        self.total = total
        self.offset = offset
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty()) and total > 1
        self.enabled = enabled
        self._drawn = False
        self._last = 0.0

    def __call__(self, done: int, total: int | None = None) -> None:
        """Report ``done`` steps (plus ``offset``) out of the bar's ``total``."""
        if not self.enabled:
            return
        done = min(self.offset + done, self.total)
        now = time.monotonic()
        if done < self.total and now - self._last < 0.1:
            return
        self._last = now
        filled = self.width * done // max(1, self.total)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line, if one was drawn."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


__all__ = ["ProgressBar"]
