"""The shared cache is not trusted: an entry read from Redis is served only when it belongs
to the key it was read under, has the model's and the layer's shapes and, with a cache
secret, carries a valid signature. Anything else is a counted miss, and the request is
computed as if the entry were not there."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import torch
from prometheus_client import generate_latest
from rpc_helpers import metric_value, random_image, request, stub

from camserve_server.runtime.cache import CachedActivation, cache_key, from_url, image_key
from camserve_server.runtime.precision import precision_name
from server_harness import ServerThread, settings_for

pytestmark = pytest.mark.redis

SECRET = "cache-secret-" + secrets.token_hex(16)  # unique, so a leak is unmistakable
MODEL = "r18"
FORGED_CLASS = 7


def _start(test_config: Path, redis_url: str, cache_secret: str | None) -> ServerThread:
    """A server of one model (r18: 512 channels at its default layer, 10 classes)."""
    settings = settings_for(test_config, redis_url=redis_url, cache_secret=cache_secret)
    settings = replace(settings, models=tuple(m for m in settings.models if m.name == MODEL))
    thread = ServerThread(settings)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def plain(test_config: Path, redis_url: str) -> Iterator[ServerThread]:
    """A server sharing Redis without a cache secret."""
    thread = _start(test_config, redis_url, None)
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def signed(test_config: Path, redis_url: str) -> Iterator[ServerThread]:
    """A server sharing Redis with a cache secret: entries are signed and verified."""
    thread = _start(test_config, redis_url, SECRET)
    yield thread
    thread.stop()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _image() -> bytes:
    """A picture no other run has cached (the Redis may outlive this test)."""
    return random_image(secrets.randbits(48), (64, 64))


def _key(server: ServerThread, image: bytes) -> str:
    """The key ``server`` reads and writes for ``image`` at the model's default layer."""
    assert server.runtime is not None
    loaded = server.runtime.models[MODEL]
    return cache_key(
        loaded.name,
        loaded.weights_digest,
        loaded.preprocess.digest(),
        loaded.primary.default_layer,
        image_key(image),
        precision_name(server.settings.precision),
    )


def _errors(server: ServerThread, kind: str) -> float:
    assert server.runtime is not None
    labels = {"tier": "redis", "kind": kind}
    return metric_value(server.runtime.metrics.registry, "camserve_cache_errors_total", labels)


def _redis_hits(server: ServerThread) -> float:
    assert server.runtime is not None
    registry = server.runtime.metrics.registry
    return metric_value(registry, "camserve_cache_hits_total", {"tier": "redis"})


def _compute(server: ServerThread, image: bytes) -> None:
    """Explain ``image`` (a miss) and wait until its activation is in Redis."""
    assert not stub(server.address).Explain(request(MODEL, "gradcam", image)).cache_hit
    assert server.runtime is not None
    assert server.runtime.cache.flush(timeout_s=5.0)


def _forged(
    fill: float = 0.5, channels: int = 512, side: int = 2, classes: int = 10
) -> CachedActivation:
    """An activation and logits of the writer's choice: p=1.000 for ``FORGED_CLASS``."""
    logits = torch.full((classes,), -50.0)
    logits[min(FORGED_CLASS, classes - 1)] = 50.0
    return CachedActivation(torch.full((channels, side, side), fill), logits)


def _plant(redis_url: str, key: str, value: CachedActivation, secret: str | None = None) -> None:
    """Write ``value`` under ``key`` as any other Redis client with the cache's code could."""
    with from_url(redis_url, ttl_s=120, secret=secret) as writer:
        writer.put(key, value)
        assert writer.flush(5.0)


def _forged_top(server: ServerThread, image: bytes) -> tuple[bool, int, float]:
    """Explain ``image``: cache hit, top class and its probability."""
    reply = stub(server.address).Explain(request(MODEL, "gradcam", image, top_k=1))
    assert reply.heatmaps
    top = reply.top_classes[0]
    return reply.cache_hit, top.index, top.probability


def test_an_entry_copied_under_another_images_key_is_not_served_as_that_image(
    plain: ServerThread, raw: redis.Redis
) -> None:
    source, target = _image(), _image()
    _compute(plain, source)
    blob = raw.get(_key(plain, source))
    assert isinstance(blob, bytes)
    raw.set(_key(plain, target), blob, ex=120)
    before = _errors(plain, "foreign")
    reply = stub(plain.address).Explain(request(MODEL, "gradcam", target, top_k=1))
    assert reply.heatmaps
    assert not reply.cache_hit, "another image's activation was served for this one"
    assert _errors(plain, "foreign") == before + 1
    # Computed, not read: the Redis entry is now this image's own, and a later read hits.
    assert plain.runtime is not None
    assert plain.runtime.cache.flush(timeout_s=5.0)
    plain.runtime.cache.memory.clear()
    hits = _redis_hits(plain)
    assert stub(plain.address).Explain(request(MODEL, "gradcam", target)).cache_hit
    assert _redis_hits(plain) == hits + 1


@pytest.mark.parametrize(
    "value",
    [
        _forged(channels=3),  # not the layer's channel count: the head cannot run
        _forged(classes=5),  # not the model's class count
        _forged(side=3),  # not the layer's spatial size for this input
    ],
    ids=["channels", "classes", "spatial"],
)
def test_a_wrong_shape_entry_is_a_counted_miss_and_the_request_succeeds(
    plain: ServerThread, redis_url: str, value: CachedActivation
) -> None:
    image = _image()
    _plant(redis_url, _key(plain, image), value)
    before = _errors(plain, "shape")
    cache_hit, _, _ = _forged_top(plain, image)  # no INTERNAL: the request is computed
    assert not cache_hit
    assert _errors(plain, "shape") == before + 1


def test_without_a_secret_a_well_formed_entry_of_the_right_key_is_served(
    plain: ServerThread, redis_url: str
) -> None:
    """What the secret is for: without one, whoever writes to Redis chooses the answer."""
    image = _image()
    _plant(redis_url, _key(plain, image), _forged())
    cache_hit, top, probability = _forged_top(plain, image)
    assert cache_hit
    assert (top, round(probability, 3)) == (FORGED_CLASS, 1.0)


@pytest.mark.parametrize("writer_secret", [None, "another-secret-" + "x" * 16])
def test_with_a_secret_an_entry_written_without_it_is_refused(
    signed: ServerThread,
    redis_url: str,
    writer_secret: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    kind = "unsigned" if writer_secret is None else "signature"
    image = _image()
    _plant(redis_url, _key(signed, image), _forged(), secret=writer_secret)
    before = _errors(signed, kind)
    cache_hit, top, probability = _forged_top(signed, image)
    assert not cache_hit
    assert (top, round(probability, 3)) != (FORGED_CLASS, 1.0)
    assert _errors(signed, kind) == before + 1
    _assert_secret_nowhere(signed, caplog)


def test_with_a_secret_a_tampered_entry_is_refused(
    signed: ServerThread, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    image = _image()
    _compute(signed, image)
    key = _key(signed, image)
    blob = raw.get(key)
    assert isinstance(blob, bytes)
    assert SECRET.encode() not in blob
    tampered = bytearray(blob)
    tampered[len(tampered) // 2] ^= 0x01  # one bit of the activation
    raw.set(key, bytes(tampered), ex=120)
    assert signed.runtime is not None
    signed.runtime.cache.memory.clear()  # so the next request reads Redis
    before = _errors(signed, "signature")
    assert not stub(signed.address).Explain(request(MODEL, "gradcam", image)).cache_hit
    assert _errors(signed, "signature") == before + 1
    _assert_secret_nowhere(signed, caplog)


def test_with_the_secret_normal_hits_still_work(signed: ServerThread, redis_url: str) -> None:
    image = _image()
    _compute(signed, image)
    assert signed.runtime is not None
    signed.runtime.cache.memory.clear()  # as on a replica that has not seen the image
    hits = _redis_hits(signed)
    reply = stub(signed.address).Explain(request(MODEL, "gradcam++", image, classes=(2,)))
    assert reply.cache_hit
    assert _redis_hits(signed) == hits + 1
    # Another replica with the same secret reads it too.
    with from_url(redis_url, secret=SECRET) as replica:
        value, tier = replica.get(_key(signed, image))
        assert tier == "redis"
        assert value is not None


def _assert_secret_nowhere(server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    assert server.runtime is not None
    assert SECRET not in generate_latest(server.runtime.metrics.registry).decode()
    assert SECRET not in caplog.text
    assert SECRET not in repr(server.settings)
