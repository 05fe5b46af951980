"""Both set stores: idempotent indexing, limits with clear errors, and deletes that free storage.

The Redis cases use the session's Redis (``$REDIS_URL``, else a private ``redis-server``:
the ``redis_url`` fixture) under a unique key prefix that is removed afterwards; they are
skipped when there is neither.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from camserve_server.demo import INPUT_SIZE, load_demo_model, preprocess
from camserve_server.demo.data import make_dataset
from camserve_server.errors import InvalidArgument, NotFound
from camserve_server.imagesets.indexer import penultimate_layer
from camserve_server.imagesets.ingest import index_arrays
from camserve_server.imagesets.records import MemberRecord, SetExists, SetFull, SetInfo
from camserve_server.imagesets.store import SetStore, open_set_store
from camserve_server.imagesets.store_memory import MemorySetStore
from camserve_server.imagesets.store_redis import RedisSetStore
from camserve_server.models import ExplainableModel
from server_fixtures import redis_url as redis_url  # the session's Redis, a fixture

LAYERS = ("features.block2", "features.block3")


def _keys_under(store: RedisSetStore) -> list[bytes]:
    return list(store.client.scan_iter(match=f"{store.prefix}:*", count=1000))


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[SetStore]:
    if request.param == "memory":
        yield MemorySetStore(max_bytes=64 << 20)
        return
    url: str = request.getfixturevalue("redis_url")  # only the Redis cases need one
    backend = RedisSetStore.from_url(url, prefix=f"camserve-test:{uuid.uuid4().hex}")
    try:
        yield backend
    finally:
        keys = _keys_under(backend)
        if keys:
            backend.client.delete(*keys)
        backend.close()


@pytest.fixture(scope="module")
def model() -> ExplainableModel:
    return ExplainableModel(load_demo_model(), input_size=INPUT_SIZE, name="demo")


def _info(name: str = "shapes", model: ExplainableModel | None = None, **limits: int) -> SetInfo:
    embedding = penultimate_layer(model) if model is not None else "classifier:input"
    return SetInfo(
        name=name,
        model="demo",
        layers=LAYERS,
        embedding_layer=embedding,
        size=0,
        bytes_used=0,
        created=0.0,
        max_images=limits.get("max_images", 1000),
        max_bytes=limits.get("max_bytes", 64 << 20),
    )


def _record(member_id: str, seed: int) -> MemberRecord:
    rng = np.random.default_rng(seed)
    return MemberRecord(
        id=member_id,
        image_hash=f"{seed:064x}",
        embedding=rng.normal(size=64).astype(np.float32),
        maxima={layer: rng.normal(size=8).astype(np.float32) for layer in LAYERS},
        positions={layer: rng.integers(0, 16, size=(8, 2)).astype(np.int32) for layer in LAYERS},
        predicted=seed % 6,
        probability=0.5,
        image=bytes(100),
        pixels=rng.integers(0, 256, size=(8, 8, 3)).astype(np.uint8),
    )


def _index(model: ExplainableModel, store: SetStore, n: int, seed: int = 3) -> int:
    samples = make_dataset(n, seed=seed)
    counts = index_arrays(
        model,
        store,
        "shapes",
        [(f"img{i:03d}", s.image) for i, s in enumerate(samples)],
        to_input=preprocess,
        layers=LAYERS,
        embedding_layer=penultimate_layer(model),
        batch_size=8,
    )
    indexed: int = counts.indexed
    return indexed


def test_create_is_idempotent_and_refuses_another_shape(store: SetStore) -> None:
    store.create(_info())
    store.create(_info())
    assert [info.name for info in store.list()] == ["shapes"]
    other = SetInfo(**{**_info().__dict__, "layers": ("features.block1",)})
    with pytest.raises(SetExists, match=r"exists for model 'demo'.*delete it or use another name"):
        store.create(other)
    with pytest.raises(InvalidArgument, match="invalid set name"):
        store.create(SetInfo(**{**_info().__dict__, "name": "bad name"}))


def test_missing_sets_and_members_are_named(store: SetStore) -> None:
    with pytest.raises(NotFound, match=r"^no image set 'nope'$"):
        store.get("nope")
    store.create(_info())
    with pytest.raises(NotFound, match=r"^no image set 'nope'$"):  # other sets go unnamed
        store.get("nope")
    with pytest.raises(NotFound, match="no image with id 'ghost'"):
        store.member("shapes", "ghost")
    with pytest.raises(InvalidArgument, match=r"indexed layers: features\.block2"):
        store.channel_column("shapes", "features.block1")
    assert store.has("shapes", "0" * 64) is None


def test_add_and_read_back(store: SetStore) -> None:
    store.create(_info())
    records = [_record(f"r{i}", i) for i in range(5)]
    store.add("shapes", records)
    info = store.get("shapes")
    assert info.size == 5 and info.bytes_used > 5 * 100
    assert store.has("shapes", records[2].image_hash) == "r2"
    ids, matrix = store.matrix("shapes")
    assert sorted(ids) == [f"r{i}" for i in range(5)] and matrix.shape == (5, 64)
    for member_id, row in zip(ids, matrix, strict=True):
        np.testing.assert_array_equal(row, records[int(member_id[1:])].embedding)
    col_ids, maxima, positions = store.channel_column("shapes", "features.block3")
    assert col_ids == ids and maxima.shape == (5, 8) and positions.shape == (5, 8, 2)
    back = store.member("shapes", "r3")
    assert back.image == records[3].image and back.pixels is not None
    assert sorted(m.id for m in store.members("shapes")) == sorted(ids)
    store.add("shapes", [_record("r5", 5)])  # the cached matrix follows the change
    assert store.matrix("shapes")[1].shape == (6, 64)


def test_predictions_and_images_read_only_what_answers_need(store: SetStore) -> None:
    store.create(_info())
    records = [_record(f"r{i}", i) for i in range(5)]
    for i, record in enumerate(records):
        record.image = bytes([i]) * (50 + i)
    store.add("shapes", records)
    ids, _ = store.matrix("shapes")
    labels = store.predictions("shapes")
    assert labels.ids == ids  # aligned with the embeddings
    assert labels.predicted.tolist() == [int(m[1:]) % 6 for m in ids]
    assert labels.probability.dtype == np.float32 and labels.of("shapes", "r4") == 4
    r0, r3 = records[0].image, records[3].image
    assert store.images("shapes", ["r3", "r0", "r3"]) == [r3, r0, r3]
    assert store.images("shapes", []) == []
    with pytest.raises(NotFound, match="no image with id 'ghost'"):
        store.images("shapes", ["r1", "ghost"])
    with pytest.raises(NotFound, match="no image with id 'ghost'"):
        labels.of("shapes", "ghost")
    with pytest.raises(NotFound, match="no image set 'nope'"):
        store.images("nope", ["r1"])
    changed = _record("r2", 11)  # replacing a member moves its label
    store.add("shapes", [changed, _record("r9", 9)])
    again = store.predictions("shapes")
    assert again.of("shapes", "r2") == 11 % 6 and again.of("shapes", "r9") == 3
    assert again.ids == store.matrix("shapes")[0]


def test_limits_give_clear_errors_and_keep_what_fits(store: SetStore) -> None:
    store.create(_info(max_images=3))
    with pytest.raises(SetFull, match=r"holds 3 of at most 3 images"):
        store.add("shapes", [_record(f"r{i}", i) for i in range(5)])
    assert store.get("shapes").size == 3  # atomic per record: the three that fit are kept
    store.add("shapes", [_record("r0", 0)])  # replacing a member needs no room
    cost = store.get("shapes").bytes_used // 3
    store.create(_info("tight", max_bytes=cost + cost // 2))
    store.add("tight", [_record("a", 1)])
    with pytest.raises(SetFull, match=r"at most \d+ bytes"):
        store.add("tight", [_record("b", 2)])
    assert store.get("tight").size == 1


def test_indexing_twice_changes_nothing(store: SetStore, model: ExplainableModel) -> None:
    store.create(_info(model=model))
    assert _index(model, store, 24) == 24
    before = store.get("shapes")
    members = {m.id: m for m in store.members("shapes")}
    assert _index(model, store, 24) == 0
    after = store.get("shapes")
    assert before.size == 24
    assert (after.size, after.bytes_used) == (before.size, before.bytes_used)
    for member in store.members("shapes"):
        old = members[member.id]
        np.testing.assert_array_equal(member.embedding, old.embedding)
        assert member.image == old.image and member.image_hash == old.image_hash


def test_delete_frees_storage(store: SetStore, model: ExplainableModel) -> None:
    store.create(_info(model=model))
    store.create(_info("other", model=model))
    _index(model, store, 16)
    used = store.get("shapes").bytes_used
    assert store.delete("shapes") == used > 0
    assert [info.name for info in store.list()] == ["other"]
    with pytest.raises(NotFound):
        store.get("shapes")
    assert store.has("other", "0" * 64) is None
    if isinstance(store, MemorySetStore):
        assert store.nbytes == 0
    if isinstance(store, RedisSetStore):
        store.delete("other")
        assert _keys_under(store) == []  # every key gone, the registry too


def test_memory_store_is_bounded_across_sets() -> None:
    store = MemorySetStore(max_bytes=3000)
    store.create(_info("a"))
    store.create(_info("b"))
    store.add("a", [_record("x", 1)])
    with pytest.raises(SetFull, match=r"in-process image-set store holds \d+ of at most 3000"):
        store.add("b", [_record(f"y{i}", i) for i in range(10)])


def test_open_set_store_picks_the_backend() -> None:
    assert isinstance(open_set_store(None), MemorySetStore)
    remote = open_set_store("redis://127.0.0.1:1/0")
    assert isinstance(remote, RedisSetStore)
    remote.close()
