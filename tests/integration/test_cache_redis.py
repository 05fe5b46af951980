"""The activation cache against a real Redis: background writes, promotion, and Redis failing.

Uses ``$REDIS_URL`` when set, else a private ``redis-server``. The tests that
stop, pause or restart Redis always run their own private server.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import torch
from rpc_helpers import wait_for

from camserve_server.runtime.cache import TieredCache, from_url
from camserve_server.runtime.cache_format import CachedActivation, CacheKey, decode, image_key
from redis_server import RedisServer

pytestmark = pytest.mark.redis

# Generous: a timed-out or refused call must come back well within this.
QUICK_S = 0.5
COOLDOWN_S = 2.0


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


class Recorder:
    """An observer that counts errors by kind."""

    def __init__(self) -> None:
        self.errors: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def on_hit(self, tier: str) -> None:
        pass

    def on_miss(self, tier: str) -> None:
        pass

    def on_error(self, tier: str, kind: str) -> None:
        with self._lock:
            self.errors[tier, kind] = self.errors.get((tier, kind), 0) + 1


def _key() -> CacheKey:
    """A key no other test (or other user of a shared Redis) has."""
    return CacheKey("resnet18", "0" * 64, "resize=224", "layer4", image_key(uuid.uuid4().bytes))


def _value(fill: float = 1.0) -> CachedActivation:
    return CachedActivation(torch.full((8, 7, 7), fill), torch.linspace(-1, 1, 10))


def test_put_becomes_visible_in_redis(redis_url: str, raw: redis.Redis) -> None:
    key = str(_key())
    with from_url(redis_url, ttl_s=600) as cache:
        cache.put(key, _value(2.0))
        assert cache.get(key).tier == "memory"  # stored synchronously
        assert wait_for(lambda: raw.exists(key) == 1), "background write never reached Redis"
        blob = raw.get(key)
        assert isinstance(blob, bytes)
        assert torch.equal(decode(blob, key=key).activation, _value(2.0).activation)
        assert 0 < int(raw.ttl(key)) <= 600
        stats = cache.stats()
        assert stats.redis is not None
        assert stats.redis.writes == 1
        assert stats.redis.error_total == 0


def test_fresh_cache_gets_a_redis_hit_and_promotes_it(redis_url: str) -> None:
    key = _key()
    with from_url(redis_url) as writer:
        writer.put(key, _value(3.0))
        assert writer.flush(5.0)
    with from_url(redis_url) as reader:
        value, tier = reader.get(key)
        assert tier == "redis"
        assert value is not None
        assert torch.equal(value.activation, _value(3.0).activation)
        assert torch.equal(value.logits, _value(3.0).logits)
        assert reader.get(key).tier == "memory"
        stats = reader.stats()
        assert stats.redis is not None
        assert (stats.memory.hits, stats.memory.misses) == (1, 1)
        assert (stats.redis.hits, stats.redis.misses) == (1, 0)


def test_float16_storage_through_redis(redis_url: str, raw: redis.Redis) -> None:
    key = str(_key())
    with from_url(redis_url, store_dtype="float16") as writer:
        writer.put(key, _value(0.5))
        assert writer.flush(5.0)
    blob = raw.get(key)
    assert isinstance(blob, bytes)
    with from_url(redis_url) as reader:
        value, tier = reader.get(key)
        assert tier == "redis"
        assert value is not None
        assert value.activation.dtype == torch.float32
        torch.testing.assert_close(value.activation, _value(0.5).activation)


def test_unreadable_blob_in_redis_is_a_counted_miss(redis_url: str, raw: redis.Redis) -> None:
    key = str(_key())
    raw.set(key, b"\x80\x04garbage that is not a cached activation", ex=60)
    recorder = Recorder()
    with from_url(redis_url, observer=recorder) as cache:
        assert cache.get(key) == (None, None)
    assert recorder.errors == {("redis", "decode"): 1}


def test_redis_entries_are_bound_to_their_key_and_signed(redis_url: str, raw: redis.Redis) -> None:
    secret = "an integration-test cache secret"
    key, copy = str(_key()), str(_key())
    with from_url(redis_url, secret=secret) as writer:
        writer.put(key, _value(5.0))
        assert writer.flush(5.0)
    blob = raw.get(key)
    assert isinstance(blob, bytes)
    assert secret.encode() not in blob
    raw.set(copy, blob, ex=60)
    recorder = Recorder()
    with from_url(redis_url, secret=secret, observer=recorder) as reader:
        assert reader.get(key).tier == "redis"
        assert reader.get(copy) == (None, None)
    with from_url(redis_url, secret="not the writer's secret, though", observer=recorder) as other:
        assert other.get(key) == (None, None)
    assert recorder.errors == {("redis", "foreign"): 1, ("redis", "signature"): 1}


def test_oversize_value_is_kept_in_memory_only(redis_url: str, raw: redis.Redis) -> None:
    key = str(_key())
    with from_url(redis_url, max_value_bytes=1024) as cache:
        cache.put(key, _value())
        assert cache.flush(5.0)
        assert cache.get(key).tier == "memory"
        stats = cache.stats()
        assert stats.redis is not None
        assert stats.redis.errors == {"too_large": 1}
    assert raw.exists(key) == 0


def test_redis_killed_mid_run(private_redis: RedisServer) -> None:
    recorder = Recorder()
    cache = from_url(
        private_redis.url, breaker_threshold=3, breaker_cooldown_s=COOLDOWN_S, observer=recorder
    )
    tier = cache.redis
    assert tier is not None
    before = _key()
    cache.put(before, _value())
    assert cache.flush(5.0)

    private_redis.stop()
    for _ in range(10):
        start = time.monotonic()
        assert cache.get(_key()) == (None, None)
        assert time.monotonic() - start < QUICK_S
    cache.put(_key(), _value())  # must not raise
    assert cache.get(before).tier == "memory"  # the memory tier still serves
    stats = tier.stats()
    assert stats.errors["connection"] >= 3
    assert stats.errors["breaker_open"] >= 1
    assert stats.breaker == "open"
    assert recorder.errors[("redis", "connection")] == stats.errors["connection"]

    # While open, Redis is skipped: a skip is counted, no new connection attempt.
    assert cache.get(_key()) == (None, None)
    after = tier.stats()
    assert after.errors["breaker_open"] > stats.errors["breaker_open"]
    assert after.errors["connection"] == stats.errors["connection"]

    private_redis.start()  # same port, empty

    def recovered() -> bool:
        cache.get(_key())
        return tier.breaker.state == "closed"

    assert wait_for(recovered, COOLDOWN_S + 10.0)
    key = _key()
    cache.put(key, _value(4.0))
    assert cache.flush(5.0)
    with from_url(private_redis.url) as reader:
        assert reader.get(key).tier == "redis"
    cache.close()


def test_paused_redis_times_out_fast(private_redis: RedisServer) -> None:
    cache = from_url(
        private_redis.url, timeout_s=0.1, breaker_threshold=2, breaker_cooldown_s=COOLDOWN_S
    )
    key = _key()
    cache.put(key, _value())
    assert cache.flush(5.0)
    assert cache.redis is not None
    assert cache.redis.get(key) is not None

    private_redis.pause()
    try:
        for _ in range(4):
            start = time.monotonic()
            assert cache.get(_key()) == (None, None)
            assert time.monotonic() - start < QUICK_S
        cache.put(_key(), _value())  # must not raise
        stats = cache.stats().redis
        assert stats is not None
        assert stats.errors.get("timeout", 0) >= 2
        assert stats.breaker == "open"
    finally:
        private_redis.resume()

    assert wait_for(lambda: cache.redis is not None and cache.redis.get(key) is not None)
    stats = cache.stats().redis
    assert stats is not None
    assert stats.breaker == "closed"
    cache.close()


def test_close_flushes_queued_writes(redis_url: str, raw: redis.Redis) -> None:
    keys = [str(_key()) for _ in range(20)]
    cache: TieredCache = from_url(redis_url)
    for key in keys:
        cache.put(key, _value())
    cache.close(10.0)
    assert raw.exists(*keys) == len(keys)


def test_full_redis_refuses_writes_without_opening_the_breaker(
    private_redis: RedisServer,
) -> None:
    admin = redis.Redis.from_url(private_redis.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)  # below what an empty server uses: every write is refused
    try:
        with from_url(private_redis.url, breaker_threshold=2) as cache:
            keys = [_key() for _ in range(5)]
            for key in keys:
                cache.put(key, _value())
            assert cache.flush(5.0)
            assert cache.redis is not None
            assert cache.redis.get(keys[0]) is None  # reads still work: a plain miss
            stats = cache.redis.stats()
            assert stats.errors == {"redis": 5}
            assert stats.misses == 1
            assert stats.breaker == "closed"
    finally:
        admin.close()
