"""Every registered method answers through gRPC, with heatmaps sized for the caller."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from rpc_helpers import heatmap, random_image, request, stub, tensor_input

from camserve import tensors
from camserve.v1 import explain_pb2 as pb
from camserve_server.methods import METHODS
from server_harness import ServerThread

LIGHT_OPTIONS = {
    "integrated_gradients": {"steps": 4},
    "smoothgrad": {"samples": 3},
    "occlusion": {"window": 16, "stride": 16},
}
TARGETED = [m for m, method in METHODS.items() if method.uses_targets]


@pytest.mark.parametrize("method", TARGETED)
def test_every_targeted_method_answers_with_one_map_per_target(
    server: ServerThread, method: str
) -> None:
    reply = stub(server.address).Explain(
        request("r18", method, tensor_input(1), classes=(1, 4), options=LIGHT_OPTIONS.get(method))
    )
    assert [h.target for h in reply.heatmaps] == [1, 4]
    for item in reply.heatmaps:
        values = heatmap(item)
        assert values.shape == (64, 64)
        assert values.min() >= 0.0 and values.max() <= 1.0
        assert item.empty == (values.max() == 0.0)
    assert reply.method == method
    assert reply.timings.total_ms >= reply.timings.compute_ms > 0


def test_encoded_image_heatmap_has_the_original_size_by_default(server: ServerThread) -> None:
    reply = stub(server.address).Explain(request("demo", "gradcam", random_image(3, (90, 70))))
    assert (reply.image_height, reply.image_width) == (90, 70)
    assert heatmap(reply.heatmaps[0]).shape == (90, 70)
    assert reply.top_classes[0].label  # the demo model ships labels
    assert len(reply.top_classes) == 5


def test_output_size_dtype_and_raw(server: ServerThread) -> None:
    reply = stub(server.address).Explain(
        request(
            "r18",
            "gradcam",
            tensor_input(2),
            classes=(3,),
            height=32,
            width=48,
            dtype=pb.DTYPE_UINT8,
            return_raw=True,
        )
    )
    item = reply.heatmaps[0]
    values = tensors.from_proto(item.map)
    assert values.dtype == np.uint8 and values.shape == (32, 48)
    raw = tensors.from_proto(item.raw)
    assert raw.dtype == np.float32 and raw.shape == (2, 2)  # layer4 of a 64x64 input


def test_top_k_targets_follow_the_prediction(server: ServerThread) -> None:
    reply = stub(server.address).Explain(request("r18", "gradcam", tensor_input(4), top_k=3))
    assert [h.target for h in reply.heatmaps] == [c.index for c in reply.top_classes[:3]]


def test_embed_activations_and_filters(server: ServerThread) -> None:
    client = stub(server.address)
    image = pb.ImageInput(encoded=random_image(5))
    embedded = client.Embed(pb.EmbedRequest(model="r18", input=image))
    assert embedded.dim == 512 and embedded.layer == "fc:input"
    maps = client.Activations(
        pb.ActivationsRequest(model="r18", input=image, layer="layer3", top_k=4)
    )
    assert tensors.from_proto(maps.maps).shape == (4, 4, 4) and len(maps.channels) == 4
    profile = client.Activations(
        pb.ActivationsRequest(
            model="r18", input=image, layer="layer3", mode=pb.ACTIVATIONS_MODE_CHANNEL_PROFILE
        )
    )
    assert tensors.from_proto(profile.profile).shape == (256,)
    filters = client.Filters(pb.FiltersRequest(model="r18"))
    assert filters.layer == "conv1" and tensors.from_proto(filters.weights).shape == (64, 3, 7, 7)


def test_list_models_and_methods(server: ServerThread) -> None:
    client = stub(server.address)
    models = {m.name: m for m in client.ListModels(pb.ListModelsRequest()).models}
    assert set(models) == {"demo", "r18", "mnv3"}
    assert models["r18"].default_layer == "layer4" and "cam" in models["r18"].methods
    assert "cam" not in models["mnv3"].methods  # its head is not GAP + linear
    assert models["demo"].has_labels and len(models["demo"].labels) == models["demo"].num_classes
    methods = {m.id: m for m in client.ListMethods(pb.ListMethodsRequest()).methods}
    assert set(methods) == set(METHODS)
    occlusion = {o.name: o for o in methods["occlusion"].options}
    assert list(occlusion["window"].default.numbers.values) == [32, 32]


def test_stream_answers_each_request_and_survives_a_bad_one(server: ServerThread) -> None:
    client = stub(server.address)
    requests = [request("r18", "gradcam", tensor_input(i)) for i in range(4)]
    requests.insert(2, request("nope", "gradcam", tensor_input(9)))
    for i, item in enumerate(requests):
        item.request_id = f"r{i}"
    replies = {r.request_id: r for r in client.ExplainStream(iter(requests))}
    assert set(replies) == {f"r{i}" for i in range(5)}
    assert replies["r2"].WhichOneof("result") == "error"
    assert replies["r2"].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert all(replies[f"r{i}"].WhichOneof("result") == "response" for i in (0, 1, 3, 4))
