"""The reliability suite: faults found by attacking a running server, each kept closed
by a test against a real server on a real port. Every test here carries the marker
``reliability`` (CI runs it with the rest). Fixtures: ``tests/server_fixtures.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from server_fixtures import private_redis, redis_url, server, test_config

__all__ = ["private_redis", "redis_url", "server", "test_config"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)
