"""Layers: the default layer is found on any CNN, ``cam`` knows where it applies, and a
method that uses no layer ignores the ``layer`` argument entirely.
"""

from __future__ import annotations

import pytest
import torch
from engine_models import (
    SMALL_OPTIONS,
    TinyResNet,
    assert_close,
    images,
    leftover_hooks,
    tiny_net,
    tiny_resnet,
    torchvision_model,
)

from camserve_server.errors import InvalidArgument
from camserve_server.methods import METHODS, MethodNotApplicable, explain
from camserve_server.models import ExplainableModel

# The last feature map before global pooling, as an architecture's author would pick it.
DEFAULT_LAYERS = {
    "resnet18": "layer4",
    "vgg11_bn": "features",
    "densenet121": "features",
    "mobilenet_v2": "features",
    "mobilenet_v3_small": "features",
    "efficientnet_b0": "features",
    "convnext_tiny": "features",
    "regnet_y_400mf": "trunk_output",
    "shufflenet_v2_x0_5": "conv5",
    "squeezenet1_1": "classifier.1",
}


@pytest.mark.parametrize(("arch", "expected"), sorted(DEFAULT_LAYERS.items()))
def test_default_layer_is_found_on_torchvision_architectures(arch: str, expected: str) -> None:
    model = torchvision_model(arch)
    assert model.default_layer == expected
    shape = model.structure.layers[expected].shape
    assert len(shape) == 4 and shape[2] * shape[3] > 1, "a spatial map, not a pooled vector"
    assert expected in model.structure.spatial_layers()


def test_a_configured_default_layer_overrides_the_found_one() -> None:
    torch.manual_seed(0)
    model = ExplainableModel(TinyResNet(), input_size=(32, 32), default_layer="layer1")
    assert model.default_layer == "layer1"
    assert explain(model, "gradcam", images(1), targets=[0]).layer == "layer1"


def test_cam_on_a_gap_linear_model_is_the_final_weights_times_the_feature_maps() -> None:
    model = torchvision_model("resnet18")
    x = images(2, size=64)
    result = explain(model, "cam", x, targets=[[1, 4], [7]])
    assert result.layer == "layer4" and result.activations is not None
    fc = model.submodule("fc")
    assert isinstance(fc, torch.nn.Linear)
    weight = fc.weight
    for i, sample in enumerate(result.samples):
        expected = torch.einsum("tk,khw->thw", weight[sample.targets], result.activations[i])
        assert sample.raw is not None and sample.heatmaps is not None
        assert_close(sample.raw, expected, atol=1e-5, rel=1e-5)
        assert sample.heatmaps.shape == (len(sample.targets), 64, 64)
        assert not bool(sample.empty.any())


@pytest.mark.parametrize("arch", ["vgg11_bn", "mobilenet_v3_small"])
def test_cam_refuses_a_model_without_a_gap_linear_head(arch: str) -> None:
    model = torchvision_model(arch)
    with pytest.raises(MethodNotApplicable, match="use 'gradcam'") as raised:
        explain(model, "cam", images(1, size=64), targets=[0])
    assert isinstance(raised.value, InvalidArgument)
    assert arch in str(raised.value)
    assert leftover_hooks(model.module) == []


@pytest.mark.parametrize(
    ("arch", "offered"), [("resnet18", True), ("vgg11_bn", False), ("mobilenet_v3_small", False)]
)
def test_cam_is_offered_only_where_it_applies(arch: str, offered: bool) -> None:
    """``check_model`` decides which methods the server lists for a model."""
    model = torchvision_model(arch)
    if offered:
        METHODS["cam"].check_model(model)
    else:
        with pytest.raises(MethodNotApplicable):
            METHODS["cam"].check_model(model)


def test_cam_refuses_a_layer_that_is_not_the_pooled_one() -> None:
    model = torchvision_model("resnet18")
    with pytest.raises(MethodNotApplicable, match="layer 'layer3'"):
        explain(model, "cam", images(1, size=64), targets=[0], layer="layer3")


@pytest.fixture(scope="module")
def tiny() -> ExplainableModel:
    return tiny_resnet()


LAYERLESS = sorted(m for m, method in METHODS.items() if not method.uses_layer)


@pytest.mark.parametrize("method", LAYERLESS)
def test_a_method_without_a_layer_ignores_the_layer_argument(
    tiny: ExplainableModel, method: str
) -> None:
    """Even a layer that does not exist: the argument is not read, so it cannot be wrong."""
    x = images(2, seed=1)
    targets = [[1], [2, 3]]
    options = SMALL_OPTIONS.get(method)
    plain = explain(tiny, method, x, targets=targets, options=options)
    for layer in ("layer1", "no.such.layer"):
        given = explain(tiny, method, x, targets=targets, options=options, layer=layer)
        assert given.layer is None
        for a, b in zip(given.samples, plain.samples, strict=True):
            assert a.raw is not None and b.raw is not None
            assert torch.equal(a.raw, b.raw)


def test_every_layer_method_reports_the_layer_it_used(tiny: ExplainableModel) -> None:
    for method_id, method in METHODS.items():
        if not method.uses_layer:
            continue
        options = SMALL_OPTIONS.get(method_id)
        targets = [[1]] if method.uses_targets else None
        used = explain(tiny, method_id, images(1), targets=targets, options=options).layer
        if method.own_default_layer:
            assert used, method_id
        else:
            assert used == tiny.default_layer, method_id
        if method_id not in ("filters", "cam"):  # a convolution; the pooled layer only
            chosen = explain(tiny, method_id, images(1), targets=targets, layer="layer1").layer
            assert chosen == "layer1", method_id


def test_own_default_layers_are_the_first_convolution_and_the_classifier_input(
    tiny: ExplainableModel,
) -> None:
    filters = explain(tiny, "filters", images(1))
    assert filters.layer == "conv1"
    assert filters.samples[0].raw is not None
    net = tiny_net(tiny)
    assert torch.equal(filters.samples[0].raw, net.conv1.weight)
    x = images(2)
    embedding = explain(tiny, "embedding", x)
    assert embedding.layer == "fc:input"
    with torch.inference_mode():
        stem = net.relu(net.bn1(net.conv1(x)))
        pooled = net.avgpool(net.layer2(net.layer1(stem))).flatten(1)
    for i, sample in enumerate(embedding.samples):
        assert sample.raw is not None
        assert_close(sample.raw, pooled[i], atol=1e-6)
