"""Tier 2: activations shared through Redis, which may be slow, full or gone at any time.

Reads are synchronous with short socket timeouts; writes go to one background
thread through a bounded backlog (full: the write is dropped and counted). A
circuit breaker skips Redis instantly after repeated timeouts or connection
errors. Nothing here raises to the caller: a failed ``get`` is ``None``, a
failed ``put`` is dropped, and each failure is counted.

Nor is Redis trusted: a value is served only if it was written under the key it is
read under, fits the model and layer that key names (``ShapeBook``) and, with a cache
secret, carries a valid signature; any other is a counted miss.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .cache_breaker import CircuitBreaker
from .cache_format import (
    CachedActivation,
    CacheFormatError,
    CacheKey,
    StoreDtype,
    decode,
    encode,
    encoded_size,
)
from .cache_observer import NULL_OBSERVER, CacheObserver, ErrorKind, TierCounters, TierStats
from .cache_shapes import ShapeBook
from .cache_signing import SigningKey, signing_key

log = logging.getLogger(__name__)

MIB = 1 << 20
_T = TypeVar("_T")


def redis_client(url: str, *, timeout_s: float, connect_timeout_s: float) -> redis.Redis:
    """A client for ``url`` with the given socket timeouts and no retries (the breaker decides)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        decode_responses=False,
    )


class RedisCache:
    """The Redis tier: ``get`` bounded by the read timeout, ``put`` queued for a daemon thread."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        writer_client: redis.Redis | None = None,
        ttl_s: int | None = 3600,
        max_value_bytes: int = 16 * MIB,
        store_dtype: StoreDtype = "float32",
        write_queue_size: int = 256,
        breaker: CircuitBreaker | None = None,
        observer: CacheObserver = NULL_OBSERVER,
        secret: str | bytes | SigningKey | None = None,
        shapes: ShapeBook | None = None,
    ) -> None:
        """``writer_client`` (default ``client``) may have a longer timeout: writes block no one.

        ``secret``: sign every write and serve only values it signed. ``shapes``: serve only
        values that fit their key's model and layer.
        """
        if ttl_s is not None and ttl_s < 1:
            raise ValueError("ttl_s must be >= 1 second or None")
        self.client = client
        self.writer_client = writer_client or client
        self.ttl_s = ttl_s
        self.max_value_bytes = max_value_bytes
        self.store_dtype: StoreDtype = store_dtype
        self.breaker = breaker or CircuitBreaker()
        self.counters = TierCounters("redis", observer)
        self.shapes = shapes or ShapeBook()
        self._signer = signing_key(secret)
        self._writer = _BackgroundWriter(self._write, write_queue_size)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout_s: float = 0.1,
        connect_timeout_s: float = 0.1,
        write_timeout_s: float = 1.0,
        ttl_s: int | None = 3600,
        max_value_bytes: int = 16 * MIB,
        store_dtype: StoreDtype = "float32",
        write_queue_size: int = 256,
        breaker_threshold: int = 5,
        breaker_cooldown_s: float = 5.0,
        observer: CacheObserver = NULL_OBSERVER,
        secret: str | bytes | SigningKey | None = None,
        shapes: ShapeBook | None = None,
    ) -> RedisCache:
        """A Redis tier for ``redis://host:port/db`` (also ``rediss://``, ``unix://``).

        Connects lazily: an unreachable server is a run of counted misses, not an error here.
        """
        return cls(
            redis_client(url, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s),
            writer_client=redis_client(
                url, timeout_s=write_timeout_s, connect_timeout_s=connect_timeout_s
            ),
            ttl_s=ttl_s,
            max_value_bytes=max_value_bytes,
            store_dtype=store_dtype,
            write_queue_size=write_queue_size,
            breaker=CircuitBreaker(breaker_threshold, breaker_cooldown_s),
            observer=observer,
            secret=secret,
            shapes=shapes,
        )

    @property
    def signed(self) -> bool:
        """Whether this tier signs its writes and refuses values it did not sign."""
        return self._signer is not None

    def get(self, key: CacheKey | str) -> CachedActivation | None:
        """The value under ``key``; ``None`` on a miss, timeout, error or open breaker, and
        for a value that is not ``key``'s, does not fit its model and layer, or is unsigned."""
        k = str(key)
        ok, blob = self._call(lambda: cast("bytes | None", self.client.get(k)))
        if not ok:
            return None
        if blob is None:
            self.counters.miss()
            return None
        try:
            value = decode(blob, key=k, signer=self._signer)
        except CacheFormatError as exc:
            log.debug("redis cache: refused the value under %s: %s", k, exc)
            self.counters.error(exc.kind)
            return None
        problem = self.shapes.problem(k, value)
        if problem is not None:
            log.debug("redis cache: refused the value under %s: %s", k, problem)
            self.counters.error("shape")
            return None
        self.counters.hit()
        return value

    def put(self, key: CacheKey | str, value: CachedActivation) -> bool:
        """Queue ``value`` for writing; ``False`` if it is dropped (too large, backlog full...)."""
        value = value.compact()  # the writer thread must not see device tensors or batch views
        if encoded_size(value, self.store_dtype, signed=self.signed) > self.max_value_bytes:
            self.counters.error("too_large")
            return False
        if self.breaker.state == "open":
            self.counters.error("breaker_open")
            return False
        if not self._writer.submit(str(key), value):
            self.counters.error("dropped_write")
            return False
        return True

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued write is done; ``False`` if ``timeout_s`` ran out first."""
        return self._writer.flush(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish queued writes for up to ``timeout_s``, drop the rest, release the clients."""
        dropped = self._writer.close(timeout_s)
        if dropped:
            self.counters.error("dropped_write", dropped)
        clients = [self.client]
        if self.writer_client is not self.client:
            clients.append(self.writer_client)
        for client in clients:
            try:
                client.close()
            except Exception:  # closing must not raise either
                log.debug("redis cache: error while closing a client", exc_info=True)

    def stats(self) -> TierStats:
        return self.counters.snapshot(
            pending_writes=self._writer.pending, breaker=self.breaker.state
        )

    def _write(self, key: str, value: CachedActivation) -> None:
        try:
            blob = encode(value, self.store_dtype, key=key, signer=self._signer)
        except Exception:
            log.exception("redis cache: cannot encode the value for %s", key)
            self.counters.error("unexpected")
            return
        ok, _ = self._call(lambda: self.writer_client.set(key, blob, ex=self.ttl_s))
        if ok:
            self.counters.wrote()

    def _call(self, call: Callable[[], _T]) -> tuple[bool, _T | None]:
        """Run one Redis command through the breaker; ``(False, None)`` on any failure."""
        if not self.breaker.allow():
            self.counters.error("breaker_open")
            return False, None
        try:
            result = call()
        except Exception as exc:
            kind, trips = _classify(exc)
            (self.breaker.failure if trips else self.breaker.success)()
            if kind == "unexpected":
                log.exception("redis cache: unexpected error")
            else:
                log.debug("redis cache: %s: %s", kind, exc)
            self.counters.error(kind)
            return False, None
        self.breaker.success()
        return True, result


def _classify(exc: Exception) -> tuple[ErrorKind, bool]:
    """The error kind, and whether it counts towards opening the breaker."""
    if isinstance(exc, redis.TimeoutError | TimeoutError):
        return "timeout", True
    if isinstance(exc, redis.ConnectionError | OSError):
        return "connection", True
    if isinstance(exc, redis.RedisError):
        return "redis", False  # the server answered (out of memory, read-only replica...)
    return "unexpected", True


class _BackgroundWriter:
    """One daemon thread draining a bounded backlog of ``(key, value)`` writes."""

    def __init__(self, work: Callable[[str, CachedActivation], None], max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError("write_queue_size must be >= 1")
        self._work = work
        self._max_pending = max_pending
        self._items: deque[tuple[str, CachedActivation]] = deque()
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="redis-cache-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._items) + int(self._busy)

    def submit(self, key: str, value: CachedActivation) -> bool:
        with self._cond:
            if self._closed or len(self._items) >= self._max_pending:
                return False
            self._items.append((key, value))
            self._cond.notify_all()
            return True

    def flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._items or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self, timeout_s: float) -> int:
        """Stop taking writes, drain for up to ``timeout_s``; returns how many were dropped."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.flush(timeout_s)
        with self._cond:
            dropped = len(self._items)
            self._items.clear()
            self._cond.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return dropped

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if not self._items:
                    return
                key, value = self._items.popleft()
                self._busy = True
            try:
                self._work(key, value)
            except Exception:  # the work function counts its own failures; never die
                log.exception("redis cache: background write failed")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
