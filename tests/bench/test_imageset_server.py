"""The image-set benchmark's server path runs on tiny settings: it indexes through the SDK,
re-sends, queries and deletes its set (its numbers are not checked).

The Redis case uses the Redis at 127.0.0.1:6379 (``$REDIS_URL`` when set) and is skipped
when no Redis answers there.
"""

from __future__ import annotations

import os
import sys
from typing import cast

import pytest
import redis
from bench_scripts import ROOT, run_for_json

sys.path.insert(0, str(ROOT))

from bench.imageset_scale import LAYERS
from bench.imageset_server import one_store, png_images

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
REGISTRY = "camserve:sets:v1:sets"  # the server's default Redis prefix, then ":sets"
FIGURES = {
    "index_images_per_s",
    "index_s",
    "index_cpu_s",
    "resend_images_per_s",
    "resend_s",
    "resend_cpu_s",
    "bytes_per_image",
    "top_activating_first_ms",
    "top_activating_p50_ms",
    "neighbours_first_ms",
    "neighbours_p50_ms",
    "embedding_map_pca_ms",
}


def _redis() -> redis.Redis | None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError:
        client.close()
        return None
    return client


def _registered(client: redis.Redis) -> set[str]:
    return {name.decode() for name in cast("set[bytes]", client.smembers(REGISTRY))}


def test_png_images_are_distinct_pngs_with_the_engine_ids() -> None:
    images = png_images(3)
    assert list(images) == ["img000000", "img000001", "img000002"]
    assert all(data.startswith(b"\x89PNG\r\n\x1a\n") for data in images.values())
    assert len(set(images.values())) == 3


def test_in_process_store_through_the_server_reports_every_figure() -> None:
    part = one_store(png_images(6), LAYERS, None, repeats=2)
    assert set(part) == FIGURES
    assert all(value > 0 for value in part.values())


def test_redis_store_through_the_server_measures_and_deletes_its_set() -> None:
    client = _redis()
    if client is None:
        pytest.skip(f"no Redis at {REDIS_URL}")
    try:
        before = _registered(client)
        part = one_store(png_images(6), LAYERS, REDIS_URL, repeats=2)
        assert set(part) == FIGURES | {"redis_bytes_per_image"}
        assert part["redis_bytes_per_image"] > 0
        left = {name for name in _registered(client) - before if name.startswith("bench-")}
        assert not left, f"sets left in Redis: {left}"
    finally:
        client.close()


@pytest.mark.slow
def test_the_script_runs_the_server_path_alone() -> None:
    report = run_for_json(
        ["bench/imageset_scale.py", "--count", "4", "--repeats", "2",
         "--through-server", "--skip-engine", "--no-redis"],
        timeout_s=300,
    )  # fmt: skip
    assert set(report) == {"through_server"}
    assert report["through_server"]["count"] == 4
    assert set(report["through_server"]["memory"]) >= FIGURES
