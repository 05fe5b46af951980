"""A private ``redis-server`` for tests, and the Redis URL the integration tests use.

``redis_for_tests()`` yields ``$REDIS_URL`` when set, else starts a private
server (no persistence, loopback only) and stops it afterwards;
``server_fixtures.py`` wraps it in the session fixture ``redis_url``.

Tests that stop, pause or restart Redis use their own ``RedisServer``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import pytest
import redis

BINARY = "redis-server"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def have_redis_server() -> bool:
    return shutil.which(BINARY) is not None


class RedisServer:
    """One ``redis-server`` subprocess on 127.0.0.1; keeps its port across ``restart``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._fixed_port = port is not None
        self._dir = tempfile.TemporaryDirectory(prefix="camserve-redis-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._log = os.path.join(self._dir.name, "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING; picks another port if taken."""
        for _ in range(5):
            args = [BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            args += ["--appendonly", "no", "--dir", self._dir.name, "--loglevel", "warning"]
            with open(self._log, "ab") as log:
                self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            if self._wait_ready(timeout_s):
                return self
            self.stop()
            if self._fixed_port:
                break
            self.port = free_port()
        with open(self._log, "rb") as log:
            tail = log.read()[-2000:].decode(errors="replace")
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}")

    def _wait_ready(self, timeout_s: float) -> bool:
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if not self.running:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.RedisError:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the server (connections to it break at once)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self._paused:
            proc.send_signal(signal.SIGCONT)
            self._paused = False
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> RedisServer:
        """Stop, then start again on the same port (empty: nothing is persisted)."""
        self.stop()
        self._fixed_port = True
        return self.start()

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing answers."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)
        self._paused = False

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextmanager
def redis_for_tests() -> Iterator[str]:
    """``$REDIS_URL`` if set, else the URL of a private server stopped on exit.

    Skips the test when neither is available.
    """
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if not have_redis_server():
        pytest.skip("needs REDIS_URL or the redis-server binary on PATH")
    with RedisServer() as server:
        yield server.url
