"""torch.export (``.pt2``) and ONNX models through the real server: listed, served, refused.

The ONNX graphs serve layer methods by the eager model's layer names, from the
cache too; a ResNet's downsample branch is a layer its graph does not split at.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import torch
import torchvision
from rpc_helpers import random_image, request, stub, tensor_input

from camserve import tensors
from camserve.v1 import explain_pb2 as pb
from camserve_server import demo
from model_exports import ONNX_METHODS, export_onnx, export_program
from server_harness import ServerThread, settings_for

OCCLUSION = {"window": 16, "stride": 8}


@pytest.fixture(scope="module")
def formats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    folder = tmp_path_factory.mktemp("formats")
    model = demo.load_demo_model().eval()
    x = torch.randn(2, 3, *demo.INPUT_SIZE)
    export_program(model, x, folder / "demo.pt2")
    export_onnx(model, x, folder / "demo.onnx")
    torch.manual_seed(0)
    export_onnx(torchvision.models.resnet18(num_classes=6).eval(), x, folder / "r18.onnx")
    common = "input_size = [64, 64]\nmean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\n"
    config = folder / "models.toml"
    config.write_text(
        f'[[models]]\nname = "eager"\narch = "camserve_server.demo.model:build_demo_model"\n'
        f'weights = "{demo.WEIGHTS_PATH.as_posix()}"\n{common}\n'
        f'[[models]]\nname = "exported"\nexported = "demo.pt2"\n{common}\n'
        f'[[models]]\nname = "graph"\nonnx = "demo.onnx"\n{common}\n'
        f'[[models]]\nname = "r18graph"\nonnx = "r18.onnx"\n{common}'
    )
    thread = ServerThread(settings_for(config))
    thread.start()
    yield thread
    thread.stop()


def test_list_models_names_formats_and_methods(formats_server: ServerThread) -> None:
    infos = {
        m.name: m for m in stub(formats_server.address).ListModels(pb.ListModelsRequest()).models
    }
    assert infos["exported"].format == "exported"
    assert infos["graph"].format == "onnx"
    assert list(infos["exported"].methods) == list(infos["eager"].methods)
    assert infos["exported"].default_layer == infos["eager"].default_layer
    assert list(infos["graph"].methods) == list(ONNX_METHODS)
    assert infos["graph"].default_layer == infos["eager"].default_layer == "features"
    assert "features.block2" in infos["graph"].layers
    assert set(infos["graph"].layers) <= set(infos["eager"].layers)
    assert infos["r18graph"].default_layer == "layer4"


@pytest.mark.parametrize("model", ["exported", "graph"])
def test_occlusion_matches_the_eager_model(formats_server: ServerThread, model: str) -> None:
    client = stub(formats_server.address)
    image = tensor_input(3)
    expected = client.Explain(request("eager", "occlusion", image, top_k=2, options=OCCLUSION))
    got = client.Explain(request(model, "occlusion", image, top_k=2, options=OCCLUSION))
    assert [h.target for h in got.heatmaps] == [h.target for h in expected.heatmaps]
    for want, have in zip(expected.heatmaps, got.heatmaps, strict=True):
        np.testing.assert_allclose(
            tensors.from_proto(have.map), tensors.from_proto(want.map), atol=1e-4
        )


def test_exported_model_serves_gradcam_like_eager(formats_server: ServerThread) -> None:
    client = stub(formats_server.address)
    image = tensor_input(4)
    expected = client.Explain(request("eager", "gradcam", image))
    got = client.Explain(request("exported", "gradcam", image))
    assert got.layer == expected.layer
    np.testing.assert_allclose(
        tensors.from_proto(got.heatmaps[0].map),
        tensors.from_proto(expected.heatmaps[0].map),
        atol=1e-4,
    )


def test_onnx_embedding_matches_the_eager_model(formats_server: ServerThread) -> None:
    client = stub(formats_server.address)
    image = tensor_input(5)
    expected = client.Embed(pb.EmbedRequest(model="eager", input=image))
    got = client.Embed(pb.EmbedRequest(model="graph", input=image))
    assert got.dim == expected.dim
    assert got.layer.endswith(":input")
    np.testing.assert_allclose(
        tensors.from_proto(got.vector), tensors.from_proto(expected.vector), rtol=1e-4, atol=1e-4
    )


def test_onnx_model_refuses_gradcam_naming_its_methods(formats_server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub(formats_server.address).Explain(request("graph", "gradcam", tensor_input(1)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "occlusion" in caught.value.details() and "scorecam" in caught.value.details()


def test_onnx_model_refuses_an_unknown_layer(formats_server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub(formats_server.address).Embed(
            pb.EmbedRequest(model="graph", input=tensor_input(1), layer="features.block9")
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "valid layers" in caught.value.details()


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "eigencam"])
def test_onnx_layer_cams_match_the_eager_model(formats_server: ServerThread, method: str) -> None:
    client = stub(formats_server.address)
    image = tensor_input(6)
    expected = client.Explain(request("eager", method, image, top_k=2))
    got = client.Explain(request("graph", method, image, top_k=2))
    assert got.layer == expected.layer == "features"
    assert [h.target for h in got.heatmaps] == [h.target for h in expected.heatmaps]
    for want, have in zip(expected.heatmaps, got.heatmaps, strict=True):
        np.testing.assert_allclose(
            tensors.from_proto(have.map), tensors.from_proto(want.map), atol=1e-4
        )


def test_onnx_activations_and_layer_embedding_match_the_eager_model(
    formats_server: ServerThread,
) -> None:
    client = stub(formats_server.address)
    image = tensor_input(7)
    expected = client.Activations(
        pb.ActivationsRequest(model="eager", input=image, layer="features.block2", top_k=4)
    )
    got = client.Activations(
        pb.ActivationsRequest(model="graph", input=image, layer="features.block2", top_k=4)
    )
    assert got.layer == "features.block2" and list(got.channels) == list(expected.channels)
    np.testing.assert_allclose(
        tensors.from_proto(got.maps), tensors.from_proto(expected.maps), rtol=1e-4, atol=1e-4
    )
    embedded = client.Embed(pb.EmbedRequest(model="graph", input=image, layer="features.block2"))
    reference = client.Embed(pb.EmbedRequest(model="eager", input=image, layer="features.block2"))
    assert embedded.layer == "features.block2" and embedded.dim == reference.dim
    np.testing.assert_allclose(
        tensors.from_proto(embedded.vector),
        tensors.from_proto(reference.vector),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize("method", ["ablationcam", "scorecam"])
def test_onnx_layer_cam_is_served_from_the_cache(formats_server: ServerThread, method: str) -> None:
    client = stub(formats_server.address)
    image = random_image(20 if method == "scorecam" else 21, size=(64, 64))
    first = client.Explain(request("graph", method, image))
    again = client.Explain(request("graph", method, image))
    assert not first.cache_hit and again.cache_hit
    np.testing.assert_allclose(
        tensors.from_proto(again.heatmaps[0].map), tensors.from_proto(first.heatmaps[0].map)
    )


def test_onnx_ablationcam_refuses_a_layer_the_graph_does_not_split_at(
    formats_server: ServerThread,
) -> None:
    client = stub(formats_server.address)
    asked = request("r18graph", "ablationcam", tensor_input(8))
    asked.layer = "layer4.0.downsample"
    with pytest.raises(grpc.RpcError) as caught:
        client.Explain(asked)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not split there" in caught.value.details()
    assert "layer4" in caught.value.details()
    asked.method = "eigencam"
    assert client.Explain(asked).layer == "layer4.0.downsample"
