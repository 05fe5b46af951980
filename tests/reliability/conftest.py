"""The reliability suite: faults found by attacking a running server, each kept closed
by a test against a real server on a real port. Every test here carries the marker
``reliability`` (CI runs it with the rest)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from redis_server import redis_for_tests

from server_harness import ServerThread, settings_for, write_test_config


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def test_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_config(tmp_path_factory.mktemp("config"))


@pytest.fixture(scope="session")
def server(test_config: Path) -> Iterator[ServerThread]:
    """A shared server: demo, r18 and mnv3 models, in-process cache only."""
    thread = ServerThread(settings_for(test_config))
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``$REDIS_URL``, else a private ``redis-server`` for the whole run."""
    with redis_for_tests() as url:
        yield url
