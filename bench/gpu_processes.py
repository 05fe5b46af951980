"""A real ``camserve-server --processes N`` in a child process, for the GPU benchmark.

The server is started exactly as an operator would (``python -m camserve_server``,
a config file, the supervisor for N > 1), waited for until every process prints
that it serves, and stopped with SIGTERM so that it drains.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_S = 240


@contextlib.contextmanager
def supervised_server(
    config: Path, processes: int, device: str, redis_url: str | None, extra: list[str]
) -> Iterator[str]:
    """Start the server; yield its ``host:port``; drain it on exit."""
    command = [
        sys.executable, "-m", "camserve_server", "--config", str(config), "--port", "0",
        "--metrics-port", "-1", "--devices", device, "--processes", str(processes),
        "--log-level", "WARNING", *extra,
    ]  # fmt: skip
    if redis_url:
        command += ["--redis-url", redis_url]
    with tempfile.TemporaryDirectory() as metrics:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        try:
            port = _wait_serving(process, processes)
            yield f"127.0.0.1:{port}"
        finally:
            _stop(process)


def _wait_serving(process: subprocess.Popen[str], processes: int) -> int:
    """The port, once ``processes`` server processes print that they serve. The output is
    read on a thread (and drained after), so a silent server fails at the deadline."""
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read_output, args=(process, lines), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    seen: list[str] = []
    while sum("serving on" in line for line in seen) < processes:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"the server did not start in {START_TIMEOUT_S} s: {seen}") from None
        if line is None:
            raise RuntimeError(f"the server exited early: {''.join(seen[-10:])}")
        seen.append(line)
    found = re.search(r":(\d+)\s*$", next(line for line in seen if "serving on" in line))
    if found is None:
        raise RuntimeError(f"no port in the server's output: {seen[-5:]}")
    return int(found.group(1))


def _read_output(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    """Every line the server prints, then ``None`` at its end."""
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)
    lines.put(None)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
