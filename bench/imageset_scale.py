"""Image sets at scale: index N generated demo images, then ask TopActivating and NearestNeighbours.

Runs the engine directly (no RPC): ``index_arrays`` with the demo model into the
in-process store, then the same records written into Redis, then the queries on both.
Reports images/s, query latency, the exact cosine search's queries/s over the whole set,
and bytes per image in process and in Redis (``MEMORY USAGE`` of the set's keys).
``--through-server`` adds the same workload through gRPC and the SDK against a real
in-process server, once per store (``imageset_server.py``).

    python bench/imageset_scale.py                       # 10,000 images, Redis at 127.0.0.1:6379
    python bench/imageset_scale.py --through-server      # the engine, then the server path
    python bench/imageset_scale.py --count 500 --no-redis    # a quick look
    python bench/imageset_scale.py --count 16 --through-server --skip-engine --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import redis
import torch

from camserve_server.demo import INPUT_SIZE, load_demo_model, preprocess
from camserve_server.demo.data import make_dataset
from camserve_server.imagesets.indexer import penultimate_layer
from camserve_server.imagesets.ingest import IngestCounts, index_arrays
from camserve_server.imagesets.queries import cosine_search, nearest, normalised, top_activating
from camserve_server.imagesets.receptive_field import receptive_field
from camserve_server.imagesets.records import SetInfo
from camserve_server.imagesets.store import SetStore
from camserve_server.imagesets.store_memory import MemorySetStore
from camserve_server.imagesets.store_redis import RedisSetStore
from camserve_server.models import ExplainableModel

try:
    from .imageset_server import run_through_server
except ImportError:  # run as a script: bench/ is on sys.path, not its parent
    from imageset_server import run_through_server  # type: ignore[no-redef]

LAYERS = ("features.block2", "features.block3")


def _median_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def _queries(store: SetStore, name: str, ids: list[str], repeats: int) -> dict[str, float]:
    """Cold and warm latency of TopActivating and NearestNeighbours on ``store``."""
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    top_activating(store, name, "features.block3", 0, 9)
    cold_top = 1000 * (time.perf_counter() - started)
    started = time.perf_counter()
    nearest(store, name, ids[0], 10)
    cold_nn = 1000 * (time.perf_counter() - started)
    channels = iter(rng.integers(0, 64, size=repeats).tolist())
    members = iter(rng.choice(ids, size=repeats).tolist())
    return {
        "top_activating_cold_ms": cold_top,
        "top_activating_ms": _median_ms(
            lambda: top_activating(store, name, "features.block3", next(channels), 9), repeats
        ),
        "nearest_cold_ms": cold_nn,
        "nearest_ms": _median_ms(lambda: nearest(store, name, next(members), 10), repeats),
    }


def _search_throughput(matrix: np.ndarray, batch: int, k: int = 10) -> dict[str, float]:
    """Queries per second of the exact cosine top-k over the whole set (one GEMM per batch)."""
    vectors = normalised(matrix)
    queries = vectors[torch.randperm(vectors.shape[0], generator=torch.Generator().manual_seed(0))]
    queries = queries[:batch]
    cosine_search(vectors, queries, k)  # warm up
    rounds = 5
    started = time.perf_counter()
    for _ in range(rounds):
        cosine_search(vectors, queries, k)
    batched = rounds * batch / (time.perf_counter() - started)
    single = 1000 / _median_ms(lambda: cosine_search(vectors, queries[:1], k), 50)
    n, d = vectors.shape
    return {
        "search_batched_qps": batched,
        "search_single_qps": single,
        "search_gflops": batched * n * d * 2 / 1e9,
    }


def synthetic_search(sizes: list[int], dim: int, batch: int = 256) -> dict[str, dict[str, float]]:
    """The exact search alone on random ``(N, dim)`` sets: how its cost grows with ``N``."""
    generator = torch.Generator().manual_seed(0)
    found = {}
    for n in sizes:
        matrix = torch.randn(n, dim, generator=generator).numpy()
        found[str(n)] = _search_throughput(matrix, batch=min(batch, n))
        del matrix
    return found


def run(n: int, batch_size: int, redis_url: str | None, repeats: int) -> dict[str, Any]:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = ExplainableModel(load_demo_model(), input_size=INPUT_SIZE, name="demo")
    embedding = penultimate_layer(model)
    started = time.perf_counter()
    samples = make_dataset(n, seed=2024)
    generate_s = time.perf_counter() - started
    items = [(f"img{i:06d}", s.image) for i, s in enumerate(samples)]
    info = SetInfo("scale", "demo", LAYERS, embedding, 0, 0, 0.0, n, 1 << 34)
    report: dict[str, Any] = {"n": n, "batch_size": batch_size, "generate_s": generate_s}

    memory = MemorySetStore(max_bytes=1 << 34)
    memory.create(info)

    def index_all() -> IngestCounts:
        return index_arrays(
            model,
            memory,
            "scale",
            items,
            to_input=preprocess,
            layers=LAYERS,
            embedding_layer=embedding,
            batch_size=batch_size,
        )

    started, cpu = time.perf_counter(), time.process_time()
    counts = index_all()
    index_s, index_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    described = memory.get("scale")
    report["memory"] = {
        "index_images_per_s": counts.indexed / index_s,
        "index_s": index_s,
        "index_cpu_s": index_cpu_s,
        "bytes_per_image": described.bytes_used / described.size,
    }
    started = time.perf_counter()
    again = index_all()  # the same images again: hash lookups only
    report["memory"]["resend_images_per_s"] = again.skipped / (time.perf_counter() - started)
    receptive_field(model, "features.block3")
    ids, matrix = memory.matrix("scale")
    report["embedding_dim"] = int(matrix.shape[1])
    report["memory"].update(_queries(memory, "scale", ids, repeats))
    report.update(_search_throughput(matrix, batch=min(1000, n)))

    if redis_url:
        report["redis"] = _redis_part(redis_url, memory, info, ids, repeats)
    return report


def _redis_part(
    url: str, memory: MemorySetStore, info: SetInfo, ids: list[str], repeats: int
) -> dict[str, float]:
    """Write the indexed records into Redis, query there, measure its memory, clean up."""
    store = RedisSetStore.from_url(url, prefix=f"camserve-bench:{uuid.uuid4().hex[:12]}")
    try:
        store.create(info)
        records = list(memory.members("scale"))
        started = time.perf_counter()
        for start in range(0, len(records), 256):
            store.add("scale", records[start : start + 256])
        write_s = time.perf_counter() - started
        part: dict[str, float] = {
            "write_records_per_s": len(records) / write_s,
            "bytes_charged_per_image": store.get("scale").bytes_used / len(records),
            "redis_bytes_per_image": store.used_memory("scale") / len(records),
        }
        part.update(_queries(store, "scale", ids, repeats))
        started = time.perf_counter()
        store.delete("scale")
        part["delete_s"] = time.perf_counter() - started
        return part
    finally:
        store.close()


def _reachable(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", "--n", type=int, default=10_000, help="images in the set")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--repeats", type=int, default=50, help="warm queries per figure")
    parser.add_argument(
        "--search-sizes",
        default="100000,1000000",
        help="comma-separated N for the search-only figures on random embeddings ('' for none)",
    )
    parser.add_argument(
        "--through-server", action="store_true", help="also index and query through gRPC"
    )
    parser.add_argument(
        "--skip-engine", action="store_true", help="leave out the engine and search-only parts"
    )
    args = parser.parse_args()
    url = None if args.no_redis or not _reachable(args.redis_url) else args.redis_url
    report: dict[str, Any] = {}
    if not args.skip_engine:
        report = run(args.count, args.batch_size, url, args.repeats)
        sizes = [int(size) for size in args.search_sizes.split(",") if size]
        report["synthetic_search"] = synthetic_search(sizes, int(report["embedding_dim"]))
    if args.through_server:
        report["through_server"] = run_through_server(args.count, LAYERS, url, args.repeats)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
