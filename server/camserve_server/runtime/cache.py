"""The activation cache: an in-process LRU in front of an optional shared Redis.

``get`` looks in memory, then Redis (a Redis hit is promoted into memory).
``put`` stores in memory at once and queues the Redis write in the background.
A slow, full or absent Redis never raises here; it only shows in the counters.
Nor is what Redis returns trusted (``cache_redis``): only values that are their key's,
fit its model and layer, and (with a cache secret) are signed are served or promoted.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple, Protocol

from .cache_breaker import CircuitBreaker
from .cache_format import (
    CachedActivation,
    CacheFormatError,
    CacheKey,
    StoreDtype,
    decode,
    encode,
    image_key,
)
from .cache_memory import MemoryCache
from .cache_observer import NULL_OBSERVER, CacheObserver, Tier, TierStats
from .cache_redis import RedisCache
from .cache_shapes import ShapeBook, model_shapes
from .cache_signing import SigningKey, signing_key

if TYPE_CHECKING:
    from ..models.loading import LoadedModel

__all__ = [
    "CacheFormatError",
    "CacheKey",
    "CacheLookup",
    "CacheObserver",
    "CacheStats",
    "CachedActivation",
    "CircuitBreaker",
    "MemoryCache",
    "RedisCache",
    "ShapeBook",
    "SigningKey",
    "TierStats",
    "TieredCache",
    "build_cache",
    "cache_key",
    "decode",
    "encode",
    "from_url",
    "image_key",
]

MIB = 1 << 20
REDIS_SCHEMES = ("redis", "rediss", "unix")


def cache_key(
    model: str,
    weights_digest: str,
    preprocess: str,
    layer: str,
    image_hash: str,
    precision: str = "float32",
) -> str:
    """The store key of one image's activation at ``layer`` (see ``CacheKey``)."""
    return CacheKey(model, weights_digest, preprocess, layer, image_hash, precision).render()


class CacheLookup(NamedTuple):
    """A ``get`` result: the value and the tier that had it, or ``(None, None)``."""

    value: CachedActivation | None
    tier: Tier | None


@dataclass(frozen=True)
class CacheStats:
    """Counters of both tiers; ``redis`` is ``None`` for a memory-only cache."""

    memory: TierStats
    redis: TierStats | None


class TieredCache:
    """Memory first, then Redis. Thread-safe; close it to flush the background writes."""

    def __init__(self, memory: MemoryCache, redis: RedisCache | None = None) -> None:
        self.memory = memory
        self.redis = redis

    def get(self, key: CacheKey | str, *, memory: bool = True) -> CacheLookup:
        """The cached value and its tier ("memory" or "redis"), or ``(None, None)``.

        ``memory=False`` skips the memory tier, for a caller that has just missed there.
        """
        value = self.memory.get(key) if memory else None
        if value is not None:
            return CacheLookup(value, "memory")
        if self.redis is None:
            return CacheLookup(None, None)
        value = self.redis.get(key)
        if value is None:
            return CacheLookup(None, None)
        self.memory.put(key, value)
        return CacheLookup(value, "redis")

    def put(self, key: CacheKey | str, value: CachedActivation) -> None:
        """Store in memory now (synchronously) and queue the Redis write."""
        value = value.compact()
        self.memory.put(key, value)
        if self.redis is not None:
            self.redis.put(key, value)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait for queued Redis writes; ``False`` if ``timeout_s`` ran out first."""
        return True if self.redis is None else self.redis.flush(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush the background writes for up to ``timeout_s``, then stop the writer."""
        if self.redis is not None:
            self.redis.close(timeout_s)

    def stats(self) -> CacheStats:
        return CacheStats(self.memory.stats(), None if self.redis is None else self.redis.stats())

    def __enter__(self) -> TieredCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def from_url(
    url: str | None,
    *,
    max_bytes: int = 512 * MIB,
    ttl_s: int | None = 3600,
    max_value_bytes: int = 16 * MIB,
    store_dtype: StoreDtype = "float32",
    timeout_s: float = 0.1,
    connect_timeout_s: float = 0.1,
    write_timeout_s: float = 1.0,
    write_queue_size: int = 256,
    breaker_threshold: int = 5,
    breaker_cooldown_s: float = 5.0,
    observer: CacheObserver = NULL_OBSERVER,
    secret: str | bytes | SigningKey | None = None,
    shapes: ShapeBook | None = None,
) -> TieredCache:
    """A memory-only cache for ``None`` or ``""``; with a Redis tier for ``redis://host:port/db``.

    ``ttl_s`` applies to both tiers. ``secret`` signs Redis writes and refuses unsigned
    reads; ``shapes`` refuses reads that do not fit their model and layer. Raises
    ``ValueError`` for an unsupported URL scheme or a short secret; an unreachable Redis
    is not an error (its tier just misses until it answers).
    """
    signer = signing_key(secret)  # a short secret is refused even without Redis
    memory = MemoryCache(max_bytes, ttl_s=ttl_s, observer=observer)
    if not url:
        return TieredCache(memory)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in REDIS_SCHEMES:
        raise ValueError(f"cache URL scheme must be one of {REDIS_SCHEMES}, got {scheme!r}")
    redis = RedisCache.from_url(
        url,
        timeout_s=timeout_s,
        connect_timeout_s=connect_timeout_s,
        write_timeout_s=write_timeout_s,
        ttl_s=ttl_s,
        max_value_bytes=max_value_bytes,
        store_dtype=store_dtype,
        write_queue_size=write_queue_size,
        breaker_threshold=breaker_threshold,
        breaker_cooldown_s=breaker_cooldown_s,
        observer=observer,
        secret=signer,
        shapes=shapes,
    )
    return TieredCache(memory, redis)


class CacheSettings(Protocol):
    """The server settings the cache reads (``config.Settings`` has them)."""

    @property
    def redis_url(self) -> str | None: ...
    @property
    def cache_bytes(self) -> int: ...
    @property
    def cache_ttl_s(self) -> int: ...
    @property
    def cache_max_value_bytes(self) -> int: ...
    @property
    def cache_secret(self) -> str | None: ...
    @property
    def precision(self) -> str: ...


def build_cache(
    settings: CacheSettings,
    observer: CacheObserver = NULL_OBSERVER,
    models: Iterable[LoadedModel] = (),
) -> TieredCache:
    """``from_url`` with the server's settings; other knobs keep their defaults.

    ``models``: the served models, whose class counts and layer shapes every value read
    from Redis must fit.
    """
    return from_url(
        settings.redis_url,
        max_bytes=settings.cache_bytes,
        ttl_s=settings.cache_ttl_s,
        max_value_bytes=settings.cache_max_value_bytes,
        observer=observer,
        secret=settings.cache_secret,
        shapes=model_shapes(models, settings.precision),
    )
