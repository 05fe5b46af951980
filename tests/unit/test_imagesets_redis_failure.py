"""Redis going away in the middle of indexing: a clear ``Unavailable``, and nothing written lost.

The test runs its own ``redis-server`` (append-only file, fsync on every write) on a free
port, kills it with SIGKILL after two batches, checks the error, starts it again on the
same data directory and checks that every record written before the kill is whole, that
the set's counters match its members, and that indexing again resumes where it stopped.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from camserve_server.demo import INPUT_SIZE, load_demo_model, preprocess
from camserve_server.demo.data import make_dataset
from camserve_server.errors import Unavailable
from camserve_server.imagesets.indexer import penultimate_layer
from camserve_server.imagesets.ingest import IngestCounts, index_arrays
from camserve_server.imagesets.records import SetInfo
from camserve_server.imagesets.store_redis import RedisSetStore
from camserve_server.models import ExplainableModel

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

BATCH = 8
LAYERS = ("features.block3",)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _DurableRedis:
    """A ``redis-server`` that persists every write (AOF, fsync always) in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except redis.BusyLoadingError:
                    time.sleep(0.05)
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_DurableRedis]:
    durable = _DurableRedis(tmp_path)
    durable.start()
    try:
        yield durable
    finally:
        durable.kill()


def test_redis_dying_mid_index_fails_clearly_and_keeps_what_was_written(
    server: _DurableRedis,
) -> None:
    model = ExplainableModel(load_demo_model(), input_size=INPUT_SIZE, name="demo")
    embedding = penultimate_layer(model)
    items = [(f"img{i:02d}", s.image) for i, s in enumerate(make_dataset(5 * BATCH, seed=5))]
    store = RedisSetStore.from_url(server.url, timeout_s=1.0, connect_timeout_s=0.5)
    store.create(SetInfo("shapes", "demo", LAYERS, embedding, 0, 0, 0.0, 1000, 1 << 30))

    def kill_after_two(counts: IngestCounts) -> None:
        if counts.indexed == 2 * BATCH:
            server.kill()

    def index(kill: bool = False) -> IngestCounts:
        return index_arrays(
            model,
            store,
            "shapes",
            items,
            to_input=preprocess,
            layers=LAYERS,
            embedding_layer=embedding,
            batch_size=BATCH,
            on_batch=kill_after_two if kill else None,
        )

    with pytest.raises(Unavailable, match=r"image-set store is unreachable") as failed:
        index(kill=True)
    assert "members written before this are kept" in str(failed.value)
    assert "127.0.0.1" not in str(failed.value)  # where Redis is goes to the log only
    with pytest.raises(Unavailable):
        store.get("shapes")  # every call says so while Redis is away

    server.start()  # same port, same directory: the append-only file is replayed
    info = store.get("shapes")
    members = list(store.members("shapes"))
    assert info.size == len(members) == 2 * BATCH
    assert sorted(m.id for m in members) == [item[0] for item in items[: 2 * BATCH]]
    assert all(m.embedding.shape == (64,) and m.image for m in members)
    assert info.bytes_used == sum(_cost(store, m.id) for m in members)

    resumed = index()  # re-sending skips what is there and indexes the rest
    assert (resumed.indexed, resumed.skipped) == (3 * BATCH, 2 * BATCH)
    assert store.get("shapes").size == 5 * BATCH
    store.close()


def _cost(store: RedisSetStore, member_id: str) -> int:
    raw = store.client.hget(store.member_key("shapes", member_id), "cost")
    assert isinstance(raw, bytes)
    return int(raw)
