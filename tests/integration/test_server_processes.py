"""``--processes N``: N real server processes on one port, one metrics endpoint, one drain."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
import pytest
from rpc_helpers import random_image, request

from camserve.v1 import explain_pb2_grpc
from camserve_server.__main__ import main
from camserve_server.config import Settings
from camserve_server.errors import InvalidArgument
from camserve_server.processes import check_processes
from redis_server import free_port

START_TIMEOUT_S = 180
CONNECTIONS = 24


def test_several_processes_need_redis_and_a_positive_count(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(InvalidArgument, match="--redis-url"):
        check_processes(Settings(processes=2))
    with pytest.raises(InvalidArgument, match="at least 1"):
        check_processes(Settings(processes=0, redis_url="redis://127.0.0.1:6379/0"))
    check_processes(Settings(processes=1))
    assert main(["--processes", "2", "--port", "0"]) == 2
    assert "--redis-url" in capsys.readouterr().err


@dataclass
class Supervised:
    process: subprocess.Popen[str]
    port: int
    metrics_port: int
    metrics_dir: Path
    serving: list[str]

    def children(self) -> list[int]:
        """PIDs of the server processes (not multiprocessing's resource tracker)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
        return found


def _read_until(stream: IO[str], pattern: str, count: int, deadline: float) -> list[str]:
    lines: list[str] = []
    while len([line for line in lines if re.search(pattern, line)]) < count:
        assert time.monotonic() < deadline, f"the server did not start: {lines}"
        line = stream.readline()
        assert line, f"the server exited early: {lines}"
        lines.append(line)
    return lines


@contextmanager
def supervised(redis_url: str, tmp_path: Path, processes: int = 2) -> Iterator[Supervised]:
    metrics_port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    process = subprocess.Popen(
        [sys.executable, "-m", "camserve_server", "--processes", str(processes), "--port", "0",
         "--metrics-port", str(metrics_port), "--redis-url", redis_url, "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        lines = _read_until(process.stdout, r"serving on", processes, deadline)
        supervising = next(line for line in lines if "supervising" in line)
        port = int(supervising.rsplit(":", 1)[1])
        serving = [line for line in lines if "serving on" in line]
        yield Supervised(process, port, metrics_port, metrics_dir, serving)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def _explain_on_new_connections(port: int, count: int) -> None:
    image = random_image(5, (64, 64))
    for _ in range(count):
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            stub = explain_pb2_grpc.ExplainServiceStub(channel)
            reply = stub.Explain(request("", "gradcam", image), timeout=60)
            assert len(reply.heatmaps) == 1


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text: str = reply.read().decode()
    return text


@pytest.mark.slow
@pytest.mark.redis
def test_two_processes_share_one_port_and_one_metrics_endpoint_and_drain(
    redis_url: str, tmp_path: Path
) -> None:
    with supervised(redis_url, tmp_path) as server:
        assert all(f":{server.port}" in line for line in server.serving)
        assert len(server.children()) == 2
        _explain_on_new_connections(server.port, CONNECTIONS)
        writers = {p.stem.rsplit("_", 1)[1] for p in server.metrics_dir.glob("histogram_*.db")}
        assert len(writers) == 2, "connections were spread over both processes"
        counts = re.findall(
            r'^camserve_request_latency_seconds_count\{[^}]*code="OK"[^}]*\} (\S+)$',
            _scrape(server.metrics_port),
            flags=re.MULTILINE,
        )
        assert sum(float(c) for c in counts) == CONNECTIONS
        children = server.children()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in children)


@pytest.mark.slow
@pytest.mark.redis
def test_when_one_process_dies_the_supervisor_stops_the_rest_and_fails(
    redis_url: str, tmp_path: Path
) -> None:
    with supervised(redis_url, tmp_path) as server:
        first, second = server.children()
        os.kill(first, signal.SIGKILL)
        assert server.process.wait(timeout=60) == 1
        time.sleep(0.5)
        assert not Path(f"/proc/{second}").exists() or _is_zombie(second)


@pytest.mark.slow
@pytest.mark.redis
def test_when_the_supervisor_is_killed_its_processes_stop_too(
    redis_url: str, tmp_path: Path
) -> None:
    """No orphan keeps serving the port: Linux sends each process SIGTERM."""
    with supervised(redis_url, tmp_path) as server:
        children = server.children()
        server.process.kill()
        server.process.wait(timeout=30)
        deadline = time.monotonic() + 60
        while not all(_is_zombie(pid) for pid in children):
            assert time.monotonic() < deadline, "a server process outlived its supervisor"
            time.sleep(0.2)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
