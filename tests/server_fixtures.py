"""Session fixtures of the suites that drive a real server on a real port (``integration``,
``reliability``): each suite's ``conftest.py`` imports them, so both start the same way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from redis_server import RedisServer, have_redis_server, redis_for_tests
from server_harness import ServerThread, settings_for, write_test_config

__all__ = ["private_redis", "redis_url", "server", "test_config"]


@pytest.fixture(scope="session")
def test_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config serving the demo model and two small random-weight torchvision models."""
    return write_test_config(tmp_path_factory.mktemp("config"))


@pytest.fixture(scope="session")
def server(test_config: Path) -> Iterator[ServerThread]:
    """The suite's shared server: demo, r18 and mnv3 models, in-process cache only."""
    thread = ServerThread(settings_for(test_config))
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``$REDIS_URL``, else a private ``redis-server`` for the whole run (skips without one)."""
    with redis_for_tests() as url:
        yield url


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis server of the test's own, which it may stop, pause, kill and restart."""
    if not have_redis_server():
        pytest.skip("needs the redis-server binary on PATH")
    with RedisServer() as redis_server:
        yield redis_server
