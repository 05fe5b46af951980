"""Image sets at scale through the real server: the SDK against an in-process camserve.

The same workload as the engine part of ``imageset_scale.py``, end to end: generated
demo images, PNG-encoded before any clock starts, sent with ``ExplainClient.index``
(8 images per message, one progress reply per server batch) to a server started in
this process (``camserve_server.inprocess.ServerThread``, the default config: the demo
model), once over the in-process set store and once over Redis, each in a fresh
process. Each store reports
indexing and idempotent re-send images/s, ``TopActivating`` and ``NearestNeighbours``
latency over gRPC (the first call, then the median of ``repeats``), the ``EmbeddingMap``
(pca) time over the whole set, and bytes per image from ``DescribeSet`` (and, for Redis,
``MEMORY USAGE`` of the set's keys). The set has a unique name and is deleted afterwards.
``*_cpu_s`` is the process's CPU time (client and server together) for a phase: on a
shared machine it moves less than the wall time does.

Client and server share one Python process (and its GIL), as in the integration tests.
"""

from __future__ import annotations

import io
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from camserve import ExplainClient
from camserve_server.config import Settings
from camserve_server.demo.data import make_dataset
from camserve_server.imagesets.store_redis import RedisSetStore
from camserve_server.inprocess import ServerThread

CHANNELS = 64  # channels of features.block3 in the demo model
SETTINGS = Settings(host="127.0.0.1", port=0, metrics_port=-1)
CALL_TIMEOUT_S = 600.0  # per query; an index call adds a second per image (the SDK's rule)


def png_images(count: int, seed: int = 2024) -> dict[str, bytes]:
    """``count`` demo images as PNG bytes, keyed ``img000000``...: the ids the engine uses."""
    encoded = {}
    for i, sample in enumerate(make_dataset(count, seed=seed)):
        buffer = io.BytesIO()
        Image.fromarray(sample.image).save(buffer, format="PNG")
        encoded[f"img{i:06d}"] = buffer.getvalue()
    return encoded


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return 1000 * (time.perf_counter() - started)


def _first_and_median(calls: Sequence[Callable[[], object]]) -> tuple[float, float]:
    """Milliseconds of the first call, and the median of the rest."""
    first = _timed(calls[0])
    return first, statistics.median(_timed(call) for call in calls[1:])


def _queries(
    client: ExplainClient, name: str, ids: list[str], layer: str, repeats: int
) -> dict[str, float]:
    """First and steady-state (median) latency of the two queries, and one pca map."""
    rng = np.random.default_rng(0)
    channels = [0, *rng.integers(0, CHANNELS, size=repeats).tolist()]
    members = [ids[0], *rng.choice(ids, size=repeats).tolist()]
    top_first, top_p50 = _first_and_median(
        [partial(client.top_activating, name, layer, c, 9) for c in channels]
    )
    nn_first, nn_p50 = _first_and_median(
        [partial(client.neighbours, name, id=m, k=10) for m in members]
    )
    points: list[int] = []
    map_ms = _timed(lambda: points.append(len(client.embedding_map(name, "pca"))))
    if points != [len(ids)]:
        raise RuntimeError(f"EmbeddingMap returned {points} points for {len(ids)} members")
    return {
        "top_activating_first_ms": top_first,
        "top_activating_p50_ms": top_p50,
        "neighbours_first_ms": nn_first,
        "neighbours_p50_ms": nn_p50,
        "embedding_map_pca_ms": map_ms,
    }


def _index(
    client: ExplainClient, name: str, images: dict[str, bytes], layers: Sequence[str]
) -> Any:
    return client.index(name, images, model="demo", layers=list(layers), progress=False)


def one_store(
    images: dict[str, bytes], layers: Sequence[str], redis_url: str | None, repeats: int
) -> dict[str, float]:
    """Start a server over one store, index ``images`` twice, query, measure, delete the set."""
    settings = replace(SETTINGS, redis_url=redis_url)
    name = f"bench-{uuid.uuid4().hex[:12]}"
    count = len(images)
    with (
        ServerThread(settings) as server,
        ExplainClient(server.address, timeout=CALL_TIMEOUT_S) as client,
    ):
        try:
            started, cpu = time.perf_counter(), time.process_time()
            first = _index(client, name, images, layers)
            index_s, index_cpu_s = time.perf_counter() - started, time.process_time() - cpu
            if first.indexed != count:
                raise RuntimeError(f"indexed {first.indexed} of {count}: {first.failures[:3]}")
            started, cpu = time.perf_counter(), time.process_time()
            again = _index(client, name, images, layers)
            resend_s, resend_cpu_s = time.perf_counter() - started, time.process_time() - cpu
            if again.skipped != count:
                raise RuntimeError(f"re-send skipped {again.skipped} of {count}")
            described = client.describe_set(name)
            part = {
                "index_images_per_s": count / index_s,
                "index_s": index_s,
                "index_cpu_s": index_cpu_s,
                "resend_images_per_s": count / resend_s,
                "resend_s": resend_s,
                "resend_cpu_s": resend_cpu_s,
                "bytes_per_image": described.bytes_used / described.size,
            }
            part.update(_queries(client, name, list(images), layers[-1], repeats))
            if redis_url is not None:
                part["redis_bytes_per_image"] = _redis_bytes(redis_url, name) / count
        finally:
            _delete(client, name)
    return part


def _redis_bytes(url: str, name: str) -> int:
    """``MEMORY USAGE`` of the set's keys, under the server's default prefix."""
    store = RedisSetStore.from_url(url)
    try:
        return int(store.used_memory(name))
    finally:
        store.close()


def _delete(client: ExplainClient, name: str) -> None:
    if any(info.name == name for info in client.sets()):
        client.delete_set(name)


def _store_in_fresh_process(
    count: int, layers: Sequence[str], redis_url: str | None, repeats: int
) -> dict[str, float]:
    """Encode the images and measure one store, in this (child) process."""
    started = time.perf_counter()
    images = png_images(count)
    encode_s = time.perf_counter() - started
    part = one_store(images, layers, redis_url, repeats)
    part["encode_s"] = encode_s
    part["png_bytes_per_image"] = sum(map(len, images.values())) / count
    return part


def run_through_server(
    count: int, layers: Sequence[str], redis_url: str | None, repeats: int
) -> dict[str, Any]:
    """Both stores (Redis when ``redis_url``), each measured in a fresh process.

    A fresh process per store keeps one store's leftovers (memory, threads) out of the
    other's figures, and gives each server the process's only asyncio loop: grpc.aio
    shares one completion-queue poller per process between loops, and a second server
    loop in one process drew spurious ``Bad file descriptor`` callbacks. One such
    message may still be printed as a server's process exits, after its figures.
    """
    report: dict[str, Any] = {"count": count}
    stores = {"memory": None, "redis": redis_url} if redis_url else {"memory": None}
    for store, url in stores.items():
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            report[store] = pool.submit(
                _store_in_fresh_process, count, tuple(layers), url, repeats
            ).result()
    return report


__all__ = ["png_images", "run_through_server"]
