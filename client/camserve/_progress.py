"""Progress on stderr with count, rate and ETA: a live bar on a terminal, a line every few
seconds in a log.

On a terminal the bar is tqdm's when tqdm is installed (the ``plots`` extra), else one
line redrawn in place. Anywhere else (a log file, a CI job, a pipe) a plain line is
printed every ``log_interval`` seconds, and a last one at the end if any was printed,
so a short run prints nothing there.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any, TextIO

LOG_INTERVAL_S = 5.0  # seconds between lines in a log
TERMINAL_INTERVAL_S = 0.2  # seconds between redraws of the plain line on a terminal


def _clock(seconds: float) -> str:
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute}:{second:02d}"


def progress_line(label: str, done: int, total: int, elapsed: float, unit: str = "it") -> str:
    """``label: done/total (pct%), rate unit/s, elapsed m:ss, ETA m:ss``."""
    share = f" ({100 * done // max(1, total)}%)" if total else ""
    text = f"{label}: {done}/{total}{share}"
    if done and elapsed > 0:
        rate = done / elapsed
        text += f", {rate:.3g} {unit}/s" if rate >= 1 else f", {1 / rate:.3g} s/{unit}"
    text += f", elapsed {_clock(elapsed)}"
    if 0 < done < total and elapsed > 0:
        text += f", ETA {_clock((total - done) * elapsed / done)}"
    return text


def _tqdm(stream: TextIO, label: str, total: int, unit: str) -> Any:
    """A tqdm bar on ``stream``, or None where tqdm is not installed."""
    try:
        module = importlib.import_module("tqdm")
    except ImportError:
        return None
    return module.tqdm(
        total=total, desc=label, unit=unit, file=stream, mininterval=0.1, dynamic_ncols=True
    )


class ProgressBar:
    """``bar(done)`` reports ``done`` steps (plus ``offset``) of ``total``; ``close()`` ends it.

    ``enabled`` (default: more than one step) turns it off altogether. On a terminal
    it is a live bar; elsewhere a line every ``log_interval`` seconds (see the module).
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        offset: int = 0,
        unit: str = "it",
        log_interval: float = LOG_INTERVAL_S,
    ) -> None:
        self.label = label
        self.total = total
        self.offset = offset
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = total > 1 if enabled is None else enabled
        isatty = getattr(self.stream, "isatty", None)
        self.terminal = bool(isatty and isatty())
        self.interval = TERMINAL_INTERVAL_S if self.terminal else log_interval
        self._started = time.monotonic()
        self._last = self._started
        self._done = 0
        self._shown: int | None = None  # the count the last printed line showed
        self._tqdm: Any = None
        if self.enabled and self.terminal:
            self._tqdm = _tqdm(self.stream, label, total, unit)

    def __call__(self, done: int, total: int | None = None) -> None:
        """Report ``done`` steps (plus ``offset``) out of the bar's ``total``."""
        if not self.enabled:
            return
        done = min(self.offset + done, self.total)
        if self._tqdm is not None:
            self._tqdm.update(done - self._tqdm.n)
            return
        self._done = done
        now = time.monotonic()
        if now - self._last < self.interval and (done < self.total or self._shown is None):
            return  # between lines; a run shorter than the interval leaves none
        self._last = now
        self._write(now)

    def print(self, text: str) -> None:
        """Print ``text`` on stdout without breaking a live bar on the terminal."""
        if self._tqdm is not None:
            self._tqdm.write(text, file=sys.stdout)
            return
        if self.terminal and self._shown is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            print(text, flush=True)
            self._write(time.monotonic())
            return
        print(text, flush=True)

    def _write(self, now: float) -> None:
        line = progress_line(self.label, self._done, self.total, now - self._started, self.unit)
        self.stream.write(f"\r{line}\x1b[K" if self.terminal else f"{line}\n")
        self.stream.flush()
        self._shown = self._done

    def close(self) -> None:
        """End the bar; a plain one that printed shows its last state (once) and ends its line."""
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
            return
        if self._shown is None:
            return
        if self._shown != self._done or self.terminal:
            self._write(time.monotonic())
        if self.terminal:
            self.stream.write("\n")
            self.stream.flush()
        self._shown = None


__all__ = ["LOG_INTERVAL_S", "ProgressBar", "progress_line"]
