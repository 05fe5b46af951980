"""One in-process server for the whole test run, on a real port (bound to port 0), and a
Redis for the tests that need one (``tests/server_fixtures.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server_fixtures import private_redis, redis_url, server, test_config

__all__ = ["private_redis", "redis_url", "server", "test_config"]
