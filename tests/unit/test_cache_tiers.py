"""The cache tiers without a Redis server: LRU by bytes, the breaker, failure handling."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import cast

import pytest
import redis
import torch

from camserve_server.config import Settings
from camserve_server.methods import BatchResult, CachedLayer, TargetRequest, get_method
from camserve_server.runtime.activation_cache import ActivationCache
from camserve_server.runtime.batcher import GroupKey, WorkItem
from camserve_server.runtime.cache import TieredCache, build_cache, cache_key, from_url
from camserve_server.runtime.cache_breaker import CircuitBreaker
from camserve_server.runtime.cache_format import CachedActivation, CacheKey, encode
from camserve_server.runtime.cache_memory import ENTRY_OVERHEAD, MemoryCache
from camserve_server.runtime.cache_redis import RedisCache
from camserve_server.runtime.cache_shapes import ShapeBook

SECRET = "a cache secret of 16+ bytes"


def _value(k: int = 4, fill: float = 1.0) -> CachedActivation:
    return CachedActivation(torch.full((k, 4, 4), fill), torch.full((10,), fill))


def _size(key: str, value: CachedActivation) -> int:
    return value.nbytes + len(key) + ENTRY_OVERHEAD


def _state(breaker: CircuitBreaker) -> str:
    return breaker.state  # a call, so mypy does not narrow the property between checks


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """An observer that records every call."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    def on_hit(self, tier: str) -> None:
        with self._lock:
            self.events.append(("hit", tier))

    def on_miss(self, tier: str) -> None:
        with self._lock:
            self.events.append(("miss", tier))

    def on_error(self, tier: str, kind: str) -> None:
        with self._lock:
            self.events.append(("error", tier, kind))


class FakeRedis:
    """Stands in for a redis client: a dict, or raises ``error`` on every call."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.error: Exception | None = None
        self.calls = 0

    def get(self, key: str) -> bytes | None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.data.get(key)

    def set(self, key: str, value: bytes, ex: int | None = None) -> bool:
        self.calls += 1
        if self.error is not None:
            raise self.error
        self.data[key] = value
        return True

    def close(self) -> None:
        pass


def _redis_tier(fake: FakeRedis, **kwargs: object) -> RedisCache:
    return RedisCache(cast(redis.Redis, fake), **kwargs)  # type: ignore[arg-type]


# MemoryCache


def test_memory_lru_evicts_least_recently_used_by_bytes() -> None:
    one = _size("a", _value())
    cache = MemoryCache(max_bytes=3 * one)
    for key in "abc":
        assert cache.put(key, _value())
    assert cache.nbytes == 3 * one
    assert len(cache) == 3
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("d", _value())
    assert cache.get("b") is None  # evicted
    assert all(cache.get(k) is not None for k in "acd")
    assert cache.nbytes <= cache.max_bytes


def test_memory_large_value_evicts_several_and_oversize_is_refused() -> None:
    small = _size("a", _value(1))
    cache = MemoryCache(max_bytes=4 * small)
    for key in "abcd":
        cache.put(key, _value(1))
    big = _value(2)
    assert _size("e", big) <= 4 * small
    cache.put("e", big)
    assert cache.get("a") is None
    assert cache.get("e") is not None
    assert not cache.put("huge", _value(64))
    assert cache.get("huge") is None
    assert cache.nbytes <= cache.max_bytes


def test_memory_replacing_a_key_keeps_accounting_right() -> None:
    cache = MemoryCache(max_bytes=1 << 20)
    cache.put("a", _value(1))
    cache.put("a", _value(8))
    assert len(cache) == 1
    assert cache.nbytes == _size("a", _value(8))
    cache.delete("a")
    assert cache.nbytes == 0
    assert len(cache) == 0


def test_memory_copies_batch_views_so_the_batch_is_not_kept() -> None:
    batch = torch.randn(16, 4, 8, 8)
    logits = torch.randn(16, 10)
    cache = MemoryCache()
    cache.put("k", CachedActivation(batch[3], logits[3]))
    stored = cache.get("k")
    assert stored is not None
    assert stored.activation.untyped_storage().nbytes() == stored.activation.nbytes
    assert stored.logits.untyped_storage().nbytes() == stored.logits.nbytes
    batch.zero_()  # the cached copy is independent of the batch
    assert stored.activation.abs().sum() > 0


def test_memory_ttl_expires_entries() -> None:
    clock = FakeClock()
    cache = MemoryCache(ttl_s=10, clock=clock)
    cache.put("k", _value())
    clock.now += 9
    assert cache.get("k") is not None
    clock.now += 2
    assert cache.get("k") is None
    assert cache.nbytes == 0


def test_memory_counts_hits_and_misses_and_tells_the_observer() -> None:
    recorder = Recorder()
    cache = MemoryCache(observer=recorder)
    cache.get("k")
    cache.put("k", _value())
    cache.get("k")
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.writes, stats.entries) == (1, 1, 1, 1)
    assert recorder.events == [("miss", "memory"), ("hit", "memory")]


def test_memory_is_thread_safe() -> None:
    one = _size("key-00", _value(1))
    cache = MemoryCache(max_bytes=20 * one)
    errors: list[BaseException] = []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(2000):
                key = f"key-{rng.randrange(60):02d}"
                if rng.random() < 0.5:
                    cache.put(key, _value(1, float(seed)))
                else:
                    value = cache.get(key)
                    assert value is None or value.activation.shape == (1, 4, 4)
                if rng.random() < 0.01:
                    cache.delete(key)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.nbytes <= cache.max_bytes
    assert cache.nbytes == len(cache) * one
    stats = cache.stats()
    assert stats.hits + stats.misses > 0


# CircuitBreaker


def test_breaker_opens_after_consecutive_failures_then_half_opens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=5.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.allow()
    breaker.success()  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert _state(breaker) == "open"
    assert not breaker.allow()
    clock.now += 5.0
    assert _state(breaker) == "half_open"
    assert breaker.allow()  # the one trial call
    assert not breaker.allow()  # others wait for its outcome
    breaker.failure()
    assert _state(breaker) == "open"
    clock.now += 5.0
    assert breaker.allow()
    breaker.success()
    assert _state(breaker) == "closed"
    assert breaker.allow()


def test_breaker_retries_a_trial_that_never_reported() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=1.0, clock=clock)
    breaker.failure()
    clock.now += 1.0
    assert breaker.allow()
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()


# RedisCache and TieredCache with a fake client


def test_redis_tier_round_trip_through_fake_client() -> None:
    fake = FakeRedis()
    tier = _redis_tier(fake)
    tier.put("k", _value(fill=2.0))
    assert tier.flush(5.0)
    assert "k" in fake.data
    value = tier.get("k")
    assert value is not None
    assert torch.equal(value.activation, _value(fill=2.0).activation)
    assert tier.get("other") is None
    tier.close()
    stats = tier.stats()
    assert (stats.hits, stats.misses, stats.writes) == (1, 1, 1)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (redis.TimeoutError("slow"), "timeout"),
        (redis.ConnectionError("gone"), "connection"),
        (ConnectionResetError("reset"), "connection"),
    ],
)
def test_redis_failures_never_raise_and_open_the_breaker(error: Exception, kind: str) -> None:
    fake = FakeRedis()
    fake.error = error
    recorder = Recorder()
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=5.0, clock=clock)
    tier = _redis_tier(fake, breaker=breaker, observer=recorder)
    for _ in range(3):
        assert tier.get("k") is None
    assert _state(breaker) == "open"
    calls = fake.calls
    assert tier.get("k") is None  # skipped: the client is not called
    assert not tier.put("k", _value())
    assert fake.calls == calls
    errors = tier.stats().errors
    assert errors[kind] == 3
    assert errors["breaker_open"] == 2
    assert ("error", "redis", kind) in recorder.events
    fake.error = None
    clock.now += 5.0
    assert tier.get("k") is None  # the half-open trial reaches the server: a miss
    assert _state(breaker) == "closed"
    tier.close()


def test_redis_error_replies_do_not_open_the_breaker() -> None:
    fake = FakeRedis()
    fake.error = redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'")
    breaker = CircuitBreaker(threshold=2)
    tier = _redis_tier(fake, breaker=breaker)
    for _ in range(5):
        assert tier.put("k", _value())
    assert tier.flush(5.0)
    assert _state(breaker) == "closed"
    assert tier.stats().errors == {"redis": 5}
    tier.close()


def test_redis_bad_blob_is_a_counted_miss() -> None:
    fake = FakeRedis()
    fake.data["k"] = b"not a cached activation"
    fake.data["v"] = encode(_value(), key="v").replace(b"CSV1", b"CSV9", 1)
    tier = _redis_tier(fake)
    assert tier.get("k") is None
    assert tier.get("v") is None
    assert tier.stats().errors == {"decode": 2}
    tier.close()


def test_redis_value_under_another_key_is_a_counted_miss() -> None:
    fake = FakeRedis()
    tier = _redis_tier(fake)
    tier.put("a", _value(fill=2.0))
    assert tier.flush(5.0)
    fake.data["b"] = fake.data["a"]  # copied: a well-formed value, but image a's
    assert tier.get("b") is None
    assert tier.get("a") is not None
    assert tier.stats().errors == {"foreign": 1}
    tier.close()


def _book() -> ShapeBook:
    book = ShapeBook()
    book.add_model(
        model="m",
        weights_digest="w" * 64,
        preprocess="resize=4",
        precision="float32",
        classes=10,
        layers={"layer4": (1, 4, 4, 4), "fc": (1, 10)},
    )
    return book


@pytest.mark.parametrize(
    ("preprocess", "value", "fits"),
    [
        ("resize=4", _value(4), True),
        ("resize=4", _value(3), False),  # channels
        ("resize=4", CachedActivation(torch.ones(4, 4, 4), torch.ones(5)), False),  # classes
        ("resize=4", CachedActivation(torch.ones(4, 5, 5), torch.ones(10)), False),  # spatial
        ("tensor", CachedActivation(torch.ones(4, 5, 5), torch.ones(10)), True),  # any size
        ("tensor", CachedActivation(torch.ones(3, 5, 5), torch.ones(10)), False),
    ],
)
def test_redis_value_that_does_not_fit_model_and_layer_is_a_counted_miss(
    preprocess: str, value: CachedActivation, fits: bool
) -> None:
    fake = FakeRedis()
    key = cache_key("m", "w" * 64, preprocess, "layer4", "ab" * 32)
    writer, reader = _redis_tier(fake), _redis_tier(fake, shapes=_book())
    writer.put(key, value)
    assert writer.flush(5.0)
    assert (reader.get(key) is not None) == fits
    assert reader.stats().errors == ({} if fits else {"shape": 1})
    writer.close()
    reader.close()


def test_shape_book_checks_only_what_it_knows() -> None:
    book, value = _book(), _value(3)
    known = cache_key("m", "w" * 64, "resize=4", "layer4", "ab" * 32)
    assert book.problem(known, value) == "3 channels, the layer has 4"
    other_layer = cache_key("m", "w" * 64, "resize=4", "features.onnx_tensor", "ab" * 32)
    assert book.problem(other_layer, value) is None  # a layer it has no shape for: classes only
    other_model = cache_key("m2", "w" * 64, "resize=4", "layer4", "ab" * 32)
    assert book.problem(other_model, value) is None
    assert book.problem("not a rendered key", value) is None
    assert len(book) == 1


def test_redis_tier_with_a_secret_signs_and_refuses_what_it_did_not_sign() -> None:
    fake = FakeRedis()
    unsigned, signed = _redis_tier(fake), _redis_tier(fake, secret=SECRET)
    other = _redis_tier(fake, secret="another secret, also long")
    assert signed.signed and not unsigned.signed
    unsigned.put("plain", _value(fill=1.0))
    signed.put("signed", _value(fill=2.0))
    other.put("other", _value(fill=3.0))
    for tier in (unsigned, signed, other):
        assert tier.flush(5.0)
    assert SECRET.encode() not in fake.data["signed"]
    assert signed.get("plain") is None
    assert signed.get("other") is None
    value = signed.get("signed")
    assert value is not None
    assert torch.equal(value.activation, _value(fill=2.0).activation)
    assert unsigned.get("signed") is not None  # without a secret, nothing to verify with
    assert signed.stats().errors == {"unsigned": 1, "signature": 1}
    for tier in (unsigned, signed, other):
        tier.close()


def test_tiered_never_promotes_a_refused_value() -> None:
    fake = FakeRedis()
    writer = TieredCache(MemoryCache(), _redis_tier(fake))
    writer.put("a", _value())
    writer.close()
    fake.data["b"] = fake.data["a"]
    reader = TieredCache(MemoryCache(), _redis_tier(fake, secret=SECRET))
    assert reader.get("a") == (None, None)  # unsigned
    assert reader.get("b") == (None, None)  # another key's
    assert len(reader.memory) == 0
    stats = reader.stats()
    assert stats.redis is not None
    assert stats.redis.errors == {"foreign": 1, "unsigned": 1}
    reader.close()


def test_redis_too_large_values_are_skipped() -> None:
    fake = FakeRedis()
    tier = _redis_tier(fake, max_value_bytes=1000)
    assert tier.put("small", _value(1))
    assert not tier.put("big", _value(64))
    tier.close()
    assert set(fake.data) == {"small"}
    assert tier.stats().errors == {"too_large": 1}


def test_redis_full_backlog_drops_writes() -> None:
    gate = threading.Event()

    class SlowRedis(FakeRedis):
        def set(self, key: str, value: bytes, ex: int | None = None) -> bool:
            gate.wait(5.0)
            return super().set(key, value, ex)

    fake = SlowRedis()
    tier = _redis_tier(fake, write_queue_size=2)
    results = [tier.put(f"k{i}", _value(1)) for i in range(10)]
    assert results[:2] == [True, True]
    assert not all(results)
    dropped = results.count(False)
    assert tier.stats().errors == {"dropped_write": dropped}
    gate.set()
    tier.close(5.0)
    assert len(fake.data) == 10 - dropped


def test_close_drops_what_it_cannot_flush_in_time() -> None:
    gate = threading.Event()

    class StuckRedis(FakeRedis):
        def set(self, key: str, value: bytes, ex: int | None = None) -> bool:
            gate.wait(5.0)
            return True

    tier = _redis_tier(StuckRedis(), write_queue_size=8)
    for i in range(4):
        tier.put(f"k{i}", _value(1))
    start = time.monotonic()
    tier.close(0.2)
    assert time.monotonic() - start < 2.0
    assert tier.stats().errors.get("dropped_write", 0) >= 3
    assert not tier.put("late", _value(1))
    gate.set()


def test_tiered_promotes_redis_hits_into_memory() -> None:
    fake = FakeRedis()
    writer = TieredCache(MemoryCache(), _redis_tier(fake))
    writer.put("k", _value(fill=3.0))
    writer.close()
    reader = TieredCache(MemoryCache(), _redis_tier(fake))
    value, tier = reader.get("k")
    assert tier == "redis"
    assert value is not None
    assert reader.get("k").tier == "memory"
    assert reader.get("missing") == (None, None)
    stats = reader.stats()
    assert stats.redis is not None
    assert (stats.memory.hits, stats.memory.misses) == (1, 2)
    assert (stats.redis.hits, stats.redis.misses) == (1, 1)
    reader.close()


def test_write_back_stores_the_misses_of_a_batch_row_by_row() -> None:
    cache = ActivationCache(from_url(None), "float32")
    batch, logits = torch.randn(2, 3, 4, 4), torch.randn(2, 5)
    group = GroupKey("m", get_method("gradcam"), "layer", (), (3, 8, 8))
    loop = asyncio.new_event_loop()
    items = [
        WorkItem(group, None, TargetRequest(), loop.create_future(), cached=hit, cache_key=key)
        for hit, key in ((CachedLayer(batch[0], logits[0]), "hit"), (None, "k"))
    ]
    loop.close()
    cache.write_back(BatchResult("gradcam", "", "layer", [], batch, logits), items)
    value, tier = cache.store.get("k")
    assert tier == "memory"
    assert value is not None
    assert torch.equal(value.activation, batch[1])
    assert cache.store.get("hit") == (None, None)


def test_from_url() -> None:
    assert from_url(None).redis is None
    assert from_url("").redis is None
    with pytest.raises(ValueError, match="scheme"):
        from_url("http://127.0.0.1:6379")
    with from_url("redis://127.0.0.1:1/0", timeout_s=0.05, breaker_threshold=2) as cache:
        assert cache.redis is not None
        cache.put("k", _value())  # memory now; the Redis write fails in the background
        assert cache.get("k").tier == "memory"
        assert cache.get("other") == (None, None)


def test_build_cache_from_server_settings() -> None:
    cache = build_cache(Settings(cache_bytes=1 << 20, cache_ttl_s=60))
    assert cache.redis is None
    assert cache.memory.max_bytes == 1 << 20
    assert cache.memory.ttl_s == 60
    with build_cache(Settings(redis_url="redis://127.0.0.1:1/0", cache_max_value_bytes=99)) as c:
        assert c.redis is not None
        assert c.redis.max_value_bytes == 99
        assert not c.redis.signed


def test_build_cache_signs_with_the_cache_secret_and_never_shows_it() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", cache_secret=SECRET)
    assert SECRET not in repr(settings)
    with build_cache(settings) as cache:
        assert cache.redis is not None
        assert cache.redis.signed
        assert SECRET not in repr(vars(cache.redis))
    with pytest.raises(ValueError, match="at least 16 bytes") as caught:
        build_cache(Settings(cache_secret="short"))  # refused even without Redis
    assert "short" not in str(caught.value).replace("16 bytes", "")


def test_cache_key_function_matches_cache_key_class() -> None:
    fields = ("m", "w" * 64, "preprocess", "layer4", "ab" * 32)
    assert cache_key(*fields) == CacheKey(*fields).render()
