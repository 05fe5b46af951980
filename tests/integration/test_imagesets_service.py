"""Image sets over the wire: index with progress, idempotent re-index, top-activating patches
checked against a brute-force pass, neighbours in feature and pixel space, embedding maps,
list/describe/delete, and a clear status for every bad input."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from rpc_helpers import png_bytes
from rpc_helpers import stub as explain_stub

from camserve import tensors
from camserve.v1 import explain_pb2 as epb
from camserve.v1 import imagesets_pb2 as pb
from camserve.v1 import imagesets_pb2_grpc
from camserve_server.demo.data import make_dataset
from camserve_server.imagesets.receptive_field import cached_receptive_field
from server_harness import ServerThread, settings_for, write_demo_only_config

PER_CLASS = 8
CLASSES = 6


def set_stub(address: str) -> imagesets_pb2_grpc.ImageSetServiceStub:
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    return imagesets_pb2_grpc.ImageSetServiceStub(channel)


def dataset(n: int = PER_CLASS * CLASSES, seed: int = 3) -> list[tuple[str, bytes, int]]:
    """``(id, png, true class)`` for ``n`` demo images, classes in turn."""
    return [
        (f"img-{i:03d}", png_bytes(sample.image), sample.label)
        for i, sample in enumerate(make_dataset(n, seed))
    ]


def index_messages(
    name: str, images: Sequence[tuple[str, bytes]], *, model: str = "demo", per_message: int = 5
) -> Iterator[pb.IndexImagesRequest]:
    yield pb.IndexImagesRequest(set=name, model=model)
    for start in range(0, len(images), per_message):
        chunk = images[start : start + per_message]
        yield pb.IndexImagesRequest(images=[pb.SetImage(id=i, encoded=b) for i, b in chunk])


def index(
    stub: imagesets_pb2_grpc.ImageSetServiceStub, name: str, images: Sequence[tuple[str, bytes]]
) -> list[pb.IndexImagesResponse]:
    return list(stub.IndexImages(index_messages(name, images), timeout=120))


def status_of(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


@pytest.fixture(scope="module")
def data() -> list[tuple[str, bytes, int]]:
    return dataset()


@pytest.fixture(scope="module")
def indexed(server: ServerThread, data: list[tuple[str, bytes, int]]) -> str:
    """A set of the demo data on the shared server, indexed once for the module."""
    name = f"demo-{uuid.uuid4().hex[:8]}"
    replies = index(set_stub(server.address), name, [(i, b) for i, b, _ in data])
    assert replies[-1].done and replies[-1].indexed == len(data)
    return name


def test_index_streams_progress_and_names_every_image(
    server: ServerThread, data: list[tuple[str, bytes, int]]
) -> None:
    name = f"progress-{uuid.uuid4().hex[:8]}"
    images = [(i, b) for i, b, _ in data[:12]]
    replies = index(set_stub(server.address), name, images)
    assert len(replies) >= 2  # progress, then the summary
    outcomes = [o for r in replies for o in r.outcomes]
    assert sorted(o.id for o in outcomes) == sorted(i for i, _ in images)
    assert {o.status for o in outcomes} == {pb.INDEX_STATUS_INDEXED}
    received = [r.received for r in replies]
    assert received == sorted(received) and received[-1] == 12
    last = replies[-1]
    assert last.done and (last.indexed, last.skipped, last.failed) == (12, 0, 0)
    assert last.set.name == name and last.set.size == 12 and last.set.bytes_used > 0
    assert last.set.model == "demo" and list(last.set.layers)
    assert last.set.embedding_layer.endswith(":input")  # the penultimate representation


def test_reindexing_the_same_images_changes_nothing(
    server: ServerThread, indexed: str, data: list[tuple[str, bytes, int]]
) -> None:
    stub = set_stub(server.address)
    before = stub.DescribeSet(pb.DescribeSetRequest(set=indexed))
    renamed = [(f"again-{i}", b) for i, b, _ in data[:10]]  # same bytes, other ids
    replies = index(stub, indexed, renamed)
    outcomes = [o for r in replies for o in r.outcomes]
    assert {o.status for o in outcomes} == {pb.INDEX_STATUS_SKIPPED}
    assert [o.existing_id for o in outcomes] == [i for i, _, _ in data[:10]]
    after = stub.DescribeSet(pb.DescribeSetRequest(set=indexed))
    assert (after.size, after.bytes_used) == (before.size, before.bytes_used)


def test_an_undecodable_image_fails_alone(server: ServerThread) -> None:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    good = dataset(3, seed=9)
    images = [(good[0][0], good[0][1]), ("broken", b"not an image"), (good[1][0], good[1][1])]
    replies = index(set_stub(server.address), name, images)
    by_id = {o.id: o for r in replies for o in r.outcomes}
    assert by_id["broken"].status == pb.INDEX_STATUS_FAILED
    assert by_id["broken"].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert by_id["broken"].reason
    assert replies[-1].indexed == 2 and replies[-1].failed == 1


def _brute_force_maxima(
    server: ServerThread, images: Sequence[tuple[str, bytes, int]], layer: str
) -> dict[str, np.ndarray]:
    """Every channel's maximum per image, from full feature maps (the Activations RPC)."""
    stub = explain_stub(server.address)
    maxima = {}
    for member_id, image, _ in images:
        reply = stub.Activations(
            epb.ActivationsRequest(model="demo", input=epb.ImageInput(encoded=image), layer=layer)
        )
        maps = np.asarray(tensors.from_proto(reply.maps))
        maxima[member_id] = maps.reshape(maps.shape[0], -1).max(axis=1)
    return maxima


def test_top_activating_patches_are_the_brute_force_top(
    server: ServerThread, indexed: str, data: list[tuple[str, bytes, int]]
) -> None:
    stub = set_stub(server.address)
    info = stub.DescribeSet(pb.DescribeSetRequest(set=indexed))
    layer = info.layers[0]
    maxima = _brute_force_maxima(server, data, layer)
    for channel in (0, 5):
        reply = stub.TopActivating(
            pb.TopActivatingRequest(set=indexed, layer=layer, channel=channel, k=6)
        )
        assert reply.layer == layer and reply.channel == channel and len(reply.items) == 6
        expected = sorted(maxima, key=lambda i: -maxima[i][channel])[:6]
        assert [item.id for item in reply.items] == expected
        field = cached_receptive_field("demo", layer)
        for item in reply.items:
            assert item.activation == pytest.approx(maxima[item.id][channel], rel=1e-4, abs=1e-5)
            x0, y0, x1, y1 = item.box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            cy, cx = field.centre(item.row, item.col)
            assert x0 <= cx < x1 and y0 <= cy < y1  # the patch holds the unit's centre
            patch = Image.open(io.BytesIO(item.patch))
            assert patch.size == (x1 - x0, y1 - y0)
    assert list(reply.receptive_field) and reply.channels > 5


def _same_class_rate(
    stub: imagesets_pb2_grpc.ImageSetServiceStub,
    name: str,
    data: list[tuple[str, bytes, int]],
    space: pb.NeighbourSpace.ValueType,
    k: int = 5,
) -> float:
    truth = {i: label for i, _, label in data}
    hits = total = 0
    for member_id, _, label in data:
        reply = stub.NearestNeighbours(
            pb.NearestNeighboursRequest(set=name, id=member_id, k=k, space=space)
        )
        assert member_id not in [n.id for n in reply.neighbours]
        distances = [n.distance for n in reply.neighbours]
        assert distances == sorted(distances) and len(distances) == k
        hits += sum(truth[n.id] == label for n in reply.neighbours)
        total += k
    return hits / total


def test_feature_neighbours_share_the_class_far_more_than_pixel_neighbours(
    server: ServerThread, indexed: str, data: list[tuple[str, bytes, int]]
) -> None:
    stub = set_stub(server.address)
    features = _same_class_rate(stub, indexed, data, pb.NEIGHBOUR_SPACE_FEATURES)
    pixels = _same_class_rate(stub, indexed, data, pb.NEIGHBOUR_SPACE_PIXELS)
    print(f"same-class rate of 5 nearest: features {features:.2f}, pixels {pixels:.2f}")
    assert features > pixels + 0.2
    assert features > 0.6


def test_neighbours_of_an_image_put_its_own_copy_first(
    server: ServerThread, indexed: str, data: list[tuple[str, bytes, int]]
) -> None:
    stub = set_stub(server.address)
    member_id, image, _ = data[7]
    for space in (pb.NEIGHBOUR_SPACE_FEATURES, pb.NEIGHBOUR_SPACE_PIXELS):
        reply = stub.NearestNeighbours(
            pb.NearestNeighboursRequest(
                set=indexed, image=image, k=3, space=space, thumbnail_size=32
            )
        )
        first = reply.neighbours[0]
        assert first.id == member_id and first.distance == pytest.approx(0.0, abs=1e-4)
        assert max(Image.open(io.BytesIO(first.thumbnail)).size) == 32


@pytest.mark.parametrize("method", [pb.PROJECTION_METHOD_PCA, pb.PROJECTION_METHOD_TSNE])
def test_embedding_map_places_every_member_with_its_class(
    server: ServerThread,
    indexed: str,
    data: list[tuple[str, bytes, int]],
    method: pb.ProjectionMethod.ValueType,
) -> None:
    stub = set_stub(server.address)
    reply = stub.EmbeddingMap(pb.EmbeddingMapRequest(set=indexed, method=method), timeout=120)
    assert reply.method == method and reply.projected == len(data)
    assert sorted(p.id for p in reply.points) == sorted(i for i, _, _ in data)
    xy = np.array([(p.x, p.y) for p in reply.points])
    assert np.isfinite(xy).all() and xy.std(axis=0).min() > 0
    assert {p.predicted for p in reply.points} <= set(range(CLASSES))
    assert all(p.label for p in reply.points)
    sample = stub.EmbeddingMap(
        pb.EmbeddingMapRequest(set=indexed, method=method, max_points=10, thumbnail_size=16)
    )
    assert len(sample.points) == 10 and all(p.thumbnail for p in sample.points)


def test_list_describe_and_delete_free_the_storage(server: ServerThread) -> None:
    stub = set_stub(server.address)
    name = f"gone-{uuid.uuid4().hex[:8]}"
    index(stub, name, [(i, b) for i, b, _ in dataset(6, seed=5)])
    described = stub.DescribeSet(pb.DescribeSetRequest(set=name))
    assert described.size == 6 and described.bytes_used > 0
    assert name in [s.name for s in stub.ListSets(pb.ListSetsRequest()).sets]
    deleted = stub.DeleteSet(pb.DeleteSetRequest(set=name))
    assert deleted.bytes_freed == described.bytes_used and deleted.members == 6
    assert name not in [s.name for s in stub.ListSets(pb.ListSetsRequest()).sets]
    error = status_of(lambda: stub.DescribeSet(pb.DescribeSetRequest(set=name)))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_bad_requests_get_a_clear_status(server: ServerThread, indexed: str) -> None:
    stub = set_stub(server.address)
    info = stub.DescribeSet(pb.DescribeSetRequest(set=indexed))
    layer = info.layers[0]
    cases = [
        (
            lambda: stub.DescribeSet(pb.DescribeSetRequest(set="no-such-set")),
            "NOT_FOUND",
            "no image set",
        ),
        (
            lambda: stub.DescribeSet(pb.DescribeSetRequest(set="bad name!")),
            "INVALID_ARGUMENT",
            "set name",
        ),
        (
            lambda: stub.TopActivating(pb.TopActivatingRequest(set=indexed, layer="nope")),
            "INVALID_ARGUMENT",
            "layer",
        ),
        (
            lambda: stub.TopActivating(
                pb.TopActivatingRequest(set=indexed, layer=layer, channel=100000)
            ),
            "INVALID_ARGUMENT",
            "channel must be in [0,",
        ),
        (
            lambda: stub.TopActivating(pb.TopActivatingRequest(set=indexed, layer=layer, k=257)),
            "INVALID_ARGUMENT",
            "k must be in [1, 256]",
        ),
        (
            lambda: stub.NearestNeighbours(
                pb.NearestNeighboursRequest(set=indexed, id="img-000", k=-1)
            ),
            "INVALID_ARGUMENT",
            "k must be in [1, 1000]",
        ),
        (
            lambda: stub.NearestNeighbours(pb.NearestNeighboursRequest(set=indexed, id="nobody")),
            "NOT_FOUND",
            "nobody",
        ),
        (
            lambda: stub.NearestNeighbours(pb.NearestNeighboursRequest(set=indexed)),
            "INVALID_ARGUMENT",
            "exactly one query",
        ),
        (
            lambda: stub.NearestNeighbours(
                pb.NearestNeighboursRequest(set=indexed, image=b"garbage")
            ),
            "INVALID_ARGUMENT",
            "",
        ),
        (
            lambda: stub.EmbeddingMap(pb.EmbeddingMapRequest(set=indexed, thumbnail_size=999)),
            "INVALID_ARGUMENT",
            "thumbnail_size must be in [0, 256]",
        ),
        (
            lambda: list(stub.IndexImages(iter([pb.IndexImagesRequest(set="new-without-model")]))),
            "INVALID_ARGUMENT",
            "needs a model",
        ),
        (
            lambda: list(
                stub.IndexImages(iter([pb.IndexImagesRequest(set="x-unknown", model="nope")]))
            ),
            "NOT_FOUND",
            "unknown model",
        ),
        (
            lambda: list(stub.IndexImages(iter([pb.IndexImagesRequest(set=indexed, model="r18")]))),
            "ALREADY_EXISTS",
            "exists for model",
        ),
        (
            lambda: list(
                stub.IndexImages(
                    iter([pb.IndexImagesRequest(set="x-layer", model="demo", layers=["nope"])])
                )
            ),
            "INVALID_ARGUMENT",
            "unknown layer",
        ),
    ]
    for call, code, words in cases:
        error = status_of(call)
        assert error.code().name == code, (code, error.details())
        assert words in error.details()


def test_set_limits_fail_the_images_past_them(tmp_path: Path) -> None:
    config = write_demo_only_config(tmp_path)
    with ServerThread(settings_for(config, max_set_images=5)) as limited:
        stub = set_stub(limited.address)
        replies = index(stub, "small", [(i, b) for i, b, _ in dataset(8, seed=4)])
        last = replies[-1]
        assert (last.indexed, last.failed, last.set.size, last.set.max_images) == (5, 3, 5, 5)
        failed = [o for r in replies for o in r.outcomes if o.status == pb.INDEX_STATUS_FAILED]
        assert {o.code for o in failed} == {grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}
        assert "at most 5 images" in failed[0].reason


@pytest.mark.redis
def test_redis_going_away_mid_index_fails_clearly_and_keeps_what_was_written(
    tmp_path: Path,
) -> None:
    from redis_server import RedisServer, have_redis_server

    if not have_redis_server():
        pytest.skip("needs the redis-server binary on PATH (Redis tests must run in CI)")
    config = write_demo_only_config(tmp_path)
    images = [(i, b) for i, b, _ in dataset(12, seed=8)]
    first_reply = threading.Event()
    with (
        RedisServer() as redis_server,
        ServerThread(settings_for(config, redis_url=redis_server.url)) as replica,
    ):
        stub = set_stub(replica.address)

        def messages() -> Iterator[pb.IndexImagesRequest]:
            yield pb.IndexImagesRequest(
                set="shared",
                model="demo",
                images=[pb.SetImage(id=i, encoded=b) for i, b in images[:6]],
            )
            assert first_reply.wait(60)
            redis_server.pause()
            yield pb.IndexImagesRequest(
                images=[pb.SetImage(id=i, encoded=b) for i, b in images[6:]]
            )

        written: list[int] = []

        def drain() -> None:
            for reply in stub.IndexImages(messages(), timeout=120):
                written.append(reply.indexed)
                first_reply.set()

        with pytest.raises(grpc.RpcError) as caught:
            drain()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "image-set store is unreachable" in (caught.value.details() or "")
        assert written[-1] == 6
        redis_server.resume()
        info = stub.DescribeSet(pb.DescribeSetRequest(set="shared"))
        assert info.size == 6
        again = list(stub.IndexImages(index_messages("shared", images[:6]), timeout=120))
        assert again[-1].skipped == 6 and again[-1].set.size == 6
        reply = stub.NearestNeighbours(pb.NearestNeighboursRequest(set="shared", id=images[0][0]))
        assert len(reply.neighbours) == 5
