"""Progress on stderr: count, rate and ETA, on a terminal and, a line every few seconds,
in a log."""

from __future__ import annotations

import io

import pytest

from camserve import _progress
from camserve._progress import ProgressBar, progress_line


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr("camserve._progress.time.monotonic", fake)
    return fake


def test_the_line_has_count_rate_and_eta() -> None:
    assert progress_line("report", 12, 60, 4.0, "map") == (
        "report: 12/60 (20%), 3 map/s, elapsed 0:04, ETA 0:16"
    )
    assert progress_line("explain", 1, 3, 10.0, "image") == (
        "explain: 1/3 (33%), 10 s/image, elapsed 0:10, ETA 0:20"
    )
    assert progress_line("x", 0, 5, 0.0) == "x: 0/5 (0%), elapsed 0:00"
    assert progress_line("x", 5, 5, 3725.0).endswith("elapsed 1:02:05")


def test_a_log_gets_a_line_every_interval_and_a_last_one(clock: _Clock) -> None:
    log = io.StringIO()
    bar = ProgressBar("report", 10, stream=log, unit="map", log_interval=5.0)
    for done in range(1, 11):
        clock.now += 1.5
        bar(done)
    bar.close()
    lines = log.getvalue().splitlines()
    assert lines == [
        "report: 4/10 (40%), 1.5 s/map, elapsed 0:06, ETA 0:09",
        "report: 8/10 (80%), 1.5 s/map, elapsed 0:12, ETA 0:03",
        "report: 10/10 (100%), 1.5 s/map, elapsed 0:15",
    ]
    assert "\r" not in log.getvalue()


def test_a_short_run_leaves_no_line_in_a_log(clock: _Clock) -> None:
    log = io.StringIO()
    bar = ProgressBar("explain", 4, stream=log)
    for done in range(1, 5):
        clock.now += 0.1
        bar(done)
    bar.close()
    assert log.getvalue() == ""


def test_a_terminal_without_tqdm_redraws_one_line(
    clock: _Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_progress, "_tqdm", lambda *args: None)
    terminal = _Terminal()
    bar = ProgressBar("explain", 4, stream=terminal, unit="image")
    for done in range(1, 5):
        clock.now += 1.0
        bar(done)
    bar.close()
    text = terminal.getvalue()
    assert text.startswith("\rexplain: 1/4 (25%)")
    assert text.endswith("explain: 4/4 (100%), 1 image/s, elapsed 0:04\x1b[K\n")
    assert text.count("\n") == 1


def test_a_terminal_gets_tqdms_bar() -> None:
    pytest.importorskip("tqdm")
    terminal = _Terminal()
    bar = ProgressBar("explain", 4, stream=terminal, unit="image")
    for done in range(1, 5):
        bar(done)
    bar.close()
    text = terminal.getvalue()
    assert "explain: 100%" in text and "4/4" in text and "image/s" in text


def test_offsets_and_disabled_bars(clock: _Clock) -> None:
    log = io.StringIO()
    bar = ProgressBar("report", 6, stream=log, log_interval=0.0, offset=3)
    bar(2)
    bar.close()
    assert log.getvalue().startswith("report: 5/6")
    quiet = io.StringIO()
    off = ProgressBar("explain", 1, stream=quiet, log_interval=0.0)  # one step: no bar
    off(1)
    off.close()
    assert quiet.getvalue() == ""
