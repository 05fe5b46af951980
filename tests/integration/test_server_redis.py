"""Redis as the shared cache tier: warm on every replica; Redis gone fails no request."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rpc_helpers import metric_value, random_image, request, stub

from redis_server import RedisServer
from server_harness import ServerThread, settings_for, write_r18_config

pytestmark = pytest.mark.redis


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_r18_config(tmp_path)


def _replica(config: Path, redis_url: str) -> ServerThread:
    thread = ServerThread(settings_for(config, redis_url=redis_url))
    thread.start()
    return thread


def test_an_image_warm_on_one_replica_is_warm_on_another(
    config: Path, private_redis: RedisServer
) -> None:
    first, second = _replica(config, private_redis.url), _replica(config, private_redis.url)
    try:
        image = random_image(11, (64, 64))
        assert not stub(first.address).Explain(request("r18", "gradcam", image)).cache_hit
        assert first.runtime is not None
        assert first.runtime.cache.flush(timeout_s=5.0)
        reply = stub(second.address).Explain(request("r18", "gradcam++", image, classes=(2,)))
        assert reply.cache_hit
        assert second.runtime is not None
        registry = second.runtime.metrics.registry
        assert metric_value(registry, "camserve_cache_hits_total", {"tier": "redis"}) == 1
    finally:
        first.stop()
        second.stop()


def test_redis_killed_mid_run_fails_no_request(config: Path, private_redis: RedisServer) -> None:
    server = _replica(config, private_redis.url)
    try:
        client = stub(server.address)
        assert client.Explain(request("r18", "gradcam", random_image(21, (64, 64)))).heatmaps
        private_redis.stop()
        started = time.monotonic()
        for seed in range(22, 30):
            reply = client.Explain(request("r18", "gradcam", random_image(seed, (64, 64))))
            assert reply.heatmaps and not reply.cache_hit
        assert time.monotonic() - started < 30
        again = client.Explain(request("r18", "layercam", random_image(29, (64, 64))))
        assert again.cache_hit  # the in-process tier still serves
        assert server.runtime is not None
        registry = server.runtime.metrics.registry
        errors = sum(
            metric_value(registry, "camserve_cache_errors_total", {"tier": "redis", "kind": kind})
            for kind in ("connection", "timeout", "breaker_open", "dropped_write", "redis")
        )
        assert errors > 0
    finally:
        server.stop()
