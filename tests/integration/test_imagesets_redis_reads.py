"""What the image-set queries read from Redis: labels come with the embeddings already held,
the pictures of an answer's members are read together, and a map reads no picture unless
thumbnails are asked for, then only those of the points it returns.

Every round trip the server's set store makes is recorded on its Redis client (one entry
per command, or per pipeline with the commands it carried).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from rpc_helpers import png_bytes

from camserve import ExplainClient
from camserve_server.demo.data import make_dataset
from camserve_server.imagesets.store_redis import RedisSetStore
from server_harness import ServerThread, settings_for

pytestmark = pytest.mark.redis

COUNT = 40
Trip = list[tuple[str, ...]]


def _words(args: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in args)


class RoundTrips:
    """Records each round trip of ``client``: a command alone, or a pipeline's commands."""

    def __init__(self, client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        self.trips: list[Trip] = []
        run_command: Callable[..., Any] = client.execute_command
        open_pipeline: Callable[..., Any] = client.pipeline

        def execute_command(*args: Any, **options: Any) -> Any:
            self.trips.append([_words(args)])
            return run_command(*args, **options)

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = open_pipeline(*args, **kwargs)
            execute = pipe.execute

            def counted(raise_on_error: bool = True) -> Any:
                self.trips.append([_words(command) for command, _ in pipe.command_stack])
                return execute(raise_on_error)

            monkeypatch.setattr(pipe, "execute", counted)
            return pipe

        monkeypatch.setattr(client, "execute_command", execute_command)
        monkeypatch.setattr(client, "pipeline", pipeline)

    def reset(self) -> None:
        self.trips.clear()

    def member_trips(self) -> list[Trip]:
        """The round trips that read or wrote any member's hash."""
        return [trip for trip in self.trips if any(":m:" in " ".join(c) for c in trip)]


@pytest.fixture(scope="module")
def replica(redis_url: str) -> Iterator[ServerThread]:
    with ServerThread(settings_for(redis_url=redis_url)) as server:
        yield server


@pytest.fixture(scope="module")
def indexed(replica: ServerThread) -> Iterator[str]:
    name = f"reads-{uuid.uuid4().hex[:8]}"
    images = {f"img-{i:03d}": png_bytes(s.image) for i, s in enumerate(make_dataset(COUNT, 7))}
    with ExplainClient(replica.address, timeout=120) as client:
        assert client.index(name, images, model="demo", progress=False).indexed == COUNT
        yield name
        client.delete_set(name)


def _store(replica: ServerThread) -> RedisSetStore:
    assert replica.runtime is not None and replica.runtime.imagesets is not None
    store = replica.runtime.imagesets.store
    assert isinstance(store, RedisSetStore)
    return store


@pytest.fixture
def trips(replica: ServerThread, monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    return RoundTrips(_store(replica).client, monkeypatch)


def _predicted(replica: ServerThread, name: str, member_id: str) -> int:
    return int(_store(replica).member(name, member_id).predicted)


def test_top_activating_reads_its_k_pictures_in_one_round_trip(
    replica: ServerThread, indexed: str, trips: RoundTrips
) -> None:
    with ExplainClient(replica.address, timeout=60) as client:
        client.top_activating(indexed, None, 1, k=8)  # the set's arrays, read once
        trips.reset()
        top = client.top_activating(indexed, None, 2, k=8)
    assert len(top) == 8
    reads = trips.member_trips()
    assert len(reads) == 1, f"{len(reads)} round trips read members: {reads}"
    assert sorted(command[1].rsplit(":m:", 1)[1] for command in reads[0]) == sorted(
        t.id for t in top
    )
    assert all(command[0] == "HGET" and command[2] == "media" for command in reads[0])
    for item in top:
        assert item.predicted == _predicted(replica, indexed, item.id)


def test_neighbours_read_no_member_for_labels_and_thumbnails_in_one_round_trip(
    replica: ServerThread, indexed: str, trips: RoundTrips
) -> None:
    query = "img-000"
    query_key = f":m:{query}"
    with ExplainClient(replica.address, timeout=60) as client:
        client.neighbours(indexed, id=query, k=3)
        trips.reset()
        plain = client.neighbours(indexed, id=query, k=10)
        others = [t for t in trips.member_trips() if not all(query_key in c[1] for c in t)]
        assert others == [], f"labels were read member by member: {others}"
        trips.reset()
        pictured = client.neighbours(indexed, id=query, k=10, thumbnail_size=16)
    assert [n.id for n in pictured] == [n.id for n in plain]
    assert all(n.thumbnail is not None and n.thumbnail.size == (16, 16) for n in pictured)
    reads = [t for t in trips.member_trips() if not all(query_key in c[1] for c in t)]
    assert len(reads) == 1 and len(reads[0]) == 10, reads
    for neighbour in plain:
        assert neighbour.predicted == _predicted(replica, indexed, neighbour.id)


def test_a_map_reads_no_picture_unless_asked_then_only_the_points_returned(
    replica: ServerThread, indexed: str, trips: RoundTrips
) -> None:
    with ExplainClient(replica.address, timeout=60) as client:
        client.embedding_map(indexed, method="pca")
        trips.reset()
        plain = client.embedding_map(indexed, method="pca")
        assert len(plain) == COUNT
        assert trips.member_trips() == [], "a map without thumbnails read members again"
        for member_id, predicted in zip(plain.ids, plain.classes.tolist(), strict=True):
            assert predicted == _predicted(replica, indexed, member_id)

        trips.reset()
        sample = client.embedding_map(indexed, method="pca", max_points=5, thumbnail_size=16)
        assert len(sample) == 5 and len(sample.thumbnails()) == 5
        reads = trips.member_trips()
        assert len(reads) == 1 and len(reads[0]) == 5, reads
        assert sorted(command[1].rsplit(":m:", 1)[1] for command in reads[0]) == sorted(sample.ids)
        assert all(command[2] == "media" for command in reads[0])


def test_a_map_of_a_changed_set_reads_only_the_core_fields(
    replica: ServerThread, trips: RoundTrips
) -> None:
    name = f"reads-{uuid.uuid4().hex[:8]}"
    images = {f"new-{i}": png_bytes(s.image) for i, s in enumerate(make_dataset(12, seed=9))}
    with ExplainClient(replica.address, timeout=60) as client:
        try:
            client.index(name, images, model="demo", progress=False)
            trips.reset()
            projected = client.embedding_map(name, method="pca")
            assert len(projected) == 12
            commands = [command for trip in trips.member_trips() for command in trip]
            assert len(commands) == 12
            assert {(command[0], command[2]) for command in commands} == {("HGET", "core")}
        finally:
            client.delete_set(name)
