"""One in-process server for the whole test run, on a real port (bound to port 0)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis_server import redis_for_tests

from server_harness import ServerThread, settings_for, write_test_config


@pytest.fixture(scope="session")
def test_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_config(tmp_path_factory.mktemp("config"))


@pytest.fixture(scope="session")
def server(test_config: Path) -> Iterator[ServerThread]:
    """The shared server: demo, r18 and mnv3 models, in-process cache only."""
    thread = ServerThread(settings_for(test_config))
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``$REDIS_URL``, else a private ``redis-server`` for the whole run (skips without one)."""
    with redis_for_tests() as url:
        yield url
