"""torch.export (``.pt2``) and ONNX models: what they serve, and the same answers as eager.

Each model is exported at test time from the same weights as its eager twin: a
seeded torchvision ResNet-18 and the shipped demo model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torchvision

from camserve_server import demo
from camserve_server.config import ModelSpec, load_config_file
from camserve_server.errors import InvalidArgument
from camserve_server.methods import CachedLayer, explain
from camserve_server.methods.chunking import rows_per_pass
from camserve_server.methods.layer_pass import forward_with_layer
from camserve_server.models import ExplainableModel
from camserve_server.models.loading import LoadedModel, load_model
from camserve_server.models.onnx_model import OnnxClassifier
from model_exports import ONNX_METHODS, export_onnx, export_program

SIZE = (64, 64)
CPU = [torch.device("cpu")]
BUDGET = 1 << 30
OCCLUSION = {"window": 16, "stride": 8}


@dataclass(frozen=True)
class Formats:
    """One network as eager torch, an exported program and an ONNX graph."""

    eager: LoadedModel
    exported: LoadedModel
    onnx: LoadedModel
    folder: Path


def export_both(module: torch.nn.Module, folder: Path, stem: str) -> tuple[Path, Path]:
    """Write ``stem.pt2`` (dynamic batch) and ``stem.onnx`` (dynamic batch)."""
    module = module.eval()
    x = torch.randn(2, 3, *SIZE)
    return export_program(module, x, folder / f"{stem}.pt2"), export_onnx(
        module, x, folder / f"{stem}.onnx"
    )


def build_formats(folder: Path, eager_spec: ModelSpec, module: torch.nn.Module) -> Formats:
    pt2, onnx_path = export_both(module, folder, eager_spec.name)
    return Formats(
        eager=load_model(eager_spec, CPU, BUDGET),
        exported=load_model(
            ModelSpec(name="exported", exported=str(pt2), input_size=SIZE), CPU, BUDGET
        ),
        onnx=load_model(ModelSpec(name="onnx", onnx=str(onnx_path), input_size=SIZE), CPU, BUDGET),
        folder=folder,
    )


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> Formats:
    folder = tmp_path_factory.mktemp("resnet_formats")
    torch.manual_seed(0)
    module = torchvision.models.resnet18(num_classes=10)
    torch.save(module.state_dict(), folder / "r18.pt")
    spec = ModelSpec(
        name="r18", arch="resnet18", weights=str(folder / "r18.pt"), num_classes=10, input_size=SIZE
    )
    return build_formats(folder, spec, module)


@pytest.fixture(scope="module")
def demo_formats(tmp_path_factory: pytest.TempPathFactory) -> Formats:
    folder = tmp_path_factory.mktemp("demo_formats")
    spec = ModelSpec(
        name="demo",
        arch="camserve_server.demo.model:build_demo_model",
        weights=str(demo.WEIGHTS_PATH),
        input_size=SIZE,
    )
    return build_formats(folder, spec, demo.load_demo_model())


@pytest.fixture(params=["resnet", "demo_formats"])
def formats(request: pytest.FixtureRequest) -> Formats:
    chosen: Formats = request.getfixturevalue(request.param)
    return chosen


def inputs(seed: int = 1, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


def assert_same_explanations(
    a: ExplainableModel,
    b: ExplainableModel,
    method: str,
    relative: float = 1e-4,
    **kwargs: object,
) -> None:
    x = inputs()
    expected = explain(a, method, x, **kwargs)  # type: ignore[arg-type]
    got = explain(b, method, x, **kwargs)  # type: ignore[arg-type]
    assert got.layer == expected.layer
    for want, have in zip(expected.samples, got.samples, strict=True):
        assert torch.equal(want.targets, have.targets)
        torch.testing.assert_close(have.logits, want.logits, rtol=1e-4, atol=1e-4)
        for field in ("heatmaps", "raw"):
            reference, value = getattr(want, field), getattr(have, field)
            assert (reference is None) == (value is None)
            if reference is not None:
                scale = float(reference.abs().max().clamp_min(1e-6))
                torch.testing.assert_close(value, reference, rtol=0, atol=relative * scale)


def test_formats_are_named_and_read_their_own_file(formats: Formats) -> None:
    assert (formats.eager.format, formats.exported.format, formats.onnx.format) == (
        "torch",
        "exported",
        "onnx",
    )
    assert formats.exported.weights_digest != formats.onnx.weights_digest
    assert formats.exported.primary.num_classes == formats.eager.primary.num_classes
    assert formats.onnx.primary.num_classes == formats.eager.primary.num_classes


def test_exported_model_serves_what_the_eager_model_serves(formats: Formats) -> None:
    assert formats.exported.methods == formats.eager.methods
    assert formats.exported.primary.default_layer == formats.eager.primary.default_layer
    structure, eager = formats.exported.primary.structure, formats.eager.primary.structure
    assert structure.final_linear == eager.final_linear
    assert structure.conv_layers == eager.conv_layers


def test_onnx_model_serves_forward_only_methods(formats: Formats) -> None:
    assert formats.onnx.methods == ONNX_METHODS
    model = formats.onnx.primary
    assert not model.layer_access and not model.gradient_access and model.layer_outputs
    with pytest.raises(InvalidArgument, match="no torch module"):
        explain(model, "gradcam", inputs())
    with pytest.raises(InvalidArgument, match="no torch module"):
        _ = model.module


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("gradcam", {"top_k": 2}),
        ("cam", {"top_k": 1}),
        ("saliency", {"top_k": 2}),
        ("filters", {}),
        ("embedding", {}),
        pytest.param("layercam", {"layer": "layer2"}, marks=pytest.mark.slow),
        pytest.param("guided_backprop", {}, marks=pytest.mark.slow),
        pytest.param("integrated_gradients", {"options": {"steps": 8}}, marks=pytest.mark.slow),
        pytest.param("eigencam", {}, marks=pytest.mark.slow),
        pytest.param("occlusion", {"top_k": 2, "options": OCCLUSION}, marks=pytest.mark.slow),
        pytest.param("feature_maps", {"options": {"top_k": 4}}, marks=pytest.mark.slow),
    ],
)
def test_exported_resnet_matches_eager(resnet: Formats, method: str, kwargs: object) -> None:
    assert_same_explanations(resnet.eager.primary, resnet.exported.primary, method, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "method",
    [
        "gradcam++",
        "deconvnet",
        pytest.param("ablationcam", marks=pytest.mark.slow),
        pytest.param("scorecam", marks=pytest.mark.slow),
    ],
)
def test_exported_demo_matches_eager(demo_formats: Formats, method: str) -> None:
    assert_same_explanations(demo_formats.eager.primary, demo_formats.exported.primary, method)


def test_exported_model_serves_from_a_cached_activation(resnet: Formats) -> None:
    x = inputs(n=1)
    first = explain(resnet.exported.primary, "gradcam", x)
    assert first.activations is not None and first.logits is not None
    cached = [CachedLayer(first.activations[0], first.logits[0])]
    again = explain(resnet.exported.primary, "gradcam", x, cached=cached)
    eager = explain(resnet.eager.primary, "gradcam", x)
    assert again.samples[0].heatmaps is not None and eager.samples[0].heatmaps is not None
    torch.testing.assert_close(again.samples[0].heatmaps, eager.samples[0].heatmaps)


def test_onnx_occlusion_matches_eager(formats: Formats) -> None:
    assert_same_explanations(
        formats.eager.primary, formats.onnx.primary, "occlusion", top_k=2, options=OCCLUSION
    )


def test_onnx_embedding_is_the_final_linear_input(formats: Formats) -> None:
    x = inputs()
    expected = explain(formats.eager.primary, "embedding", x)
    got = explain(formats.onnx.primary, "embedding", x, options={"normalize": True})
    assert got.layer is not None and got.layer.endswith(":input")
    for want, have in zip(expected.samples, got.samples, strict=True):
        assert want.raw is not None and have.raw is not None
        torch.testing.assert_close(have.raw, torch.nn.functional.normalize(want.raw, dim=0))
    assert formats.onnx.primary.structure.embedding_dim == expected.samples[0].raw.numel()  # type: ignore[union-attr]


def test_onnx_occlusion_chunks_follow_the_memory_budget(
    demo_formats: Formats, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_path = demo_formats.folder / "demo.onnx"
    per_sample = demo_formats.onnx.primary.structure.activation_bytes
    assert per_sample > 0
    spec = ModelSpec(name="tight", onnx=str(onnx_path), input_size=SIZE)
    tight = load_model(spec, CPU, memory_budget_bytes=3 * per_sample + 1).primary
    assert rows_per_pass(tight) == 3
    batches: list[int] = []
    original = OnnxClassifier.__call__

    def recording(self: OnnxClassifier, x: torch.Tensor) -> torch.Tensor:
        batches.append(int(x.shape[0]))
        return original(self, x)

    monkeypatch.setattr(OnnxClassifier, "__call__", recording)
    result = explain(tight, "occlusion", inputs(n=1), options=OCCLUSION)
    windows = 7 * 7
    assert batches[0] == 1  # the unoccluded logits
    assert max(batches[1:]) == 3 and sum(batches[1:]) == windows
    expected = explain(demo_formats.eager.primary, "occlusion", inputs(n=1), options=OCCLUSION)
    torch.testing.assert_close(
        result.samples[0].heatmaps, expected.samples[0].heatmaps, rtol=0, atol=1e-4
    )


def test_onnx_graph_with_a_fixed_batch_runs_any_batch(
    demo_formats: Formats, tmp_path: Path
) -> None:
    module = demo_formats.eager.primary.module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.randn(2, 3, *SIZE),), str(tmp_path / "fixed.onnx"), dynamo=False
        )
    graph = OnnxClassifier(
        tmp_path / "fixed.onnx", name="fixed", input_size=SIZE, device=torch.device("cpu")
    )
    x = inputs(n=3)
    with torch.inference_mode():
        expected = module(x)
    torch.testing.assert_close(graph(x), expected, rtol=1e-4, atol=1e-4)
    activation, logits = graph.forward_with_layer(x, "features")
    head = graph.head("features")
    assert activation.shape == (3, 64, 16, 16) and head is not None
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(head(activation), expected, rtol=1e-4, atol=1e-4)


def test_wrong_input_sizes_are_refused(resnet: Formats) -> None:
    x = torch.zeros(1, 3, 72, 64)
    with pytest.raises(InvalidArgument, match="64x64"):
        explain(resnet.exported.primary, "gradcam", x)
    with pytest.raises(InvalidArgument, match=r"\(\?, 3, 64, 64\)"):
        explain(resnet.onnx.primary, "occlusion", x)
    with pytest.raises(InvalidArgument, match="input_size is 96x96"):
        load_model(
            ModelSpec(name="r", onnx=str(resnet.folder / "r18.onnx"), input_size=(96, 96)),
            CPU,
            BUDGET,
        )
    with pytest.raises(InvalidArgument, match="input_size is 96x96"):
        load_model(
            ModelSpec(name="r", exported=str(resnet.folder / "r18.pt2"), input_size=(96, 96)),
            CPU,
            BUDGET,
        )


def test_exported_program_with_a_fixed_batch_is_refused(tmp_path: Path) -> None:
    program = torch.export.export(demo.load_demo_model().eval(), (torch.randn(1, 3, *SIZE),))
    torch.export.save(program, tmp_path / "fixed.pt2")
    with pytest.raises(InvalidArgument, match="dynamic batch"):
        load_model(
            ModelSpec(name="fixed", exported=str(tmp_path / "fixed.pt2"), input_size=SIZE),
            CPU,
            BUDGET,
        )


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    (tmp_path / "bad.pt2").write_bytes(b"not an archive")
    for spec in (
        ModelSpec(name="bad", onnx=str(tmp_path / "bad.onnx"), input_size=SIZE),
        ModelSpec(name="bad", exported=str(tmp_path / "bad.pt2"), input_size=SIZE),
    ):
        with pytest.raises(InvalidArgument, match="model 'bad'"):
            load_model(spec, CPU, BUDGET)


def test_config_names_exactly_one_source(tmp_path: Path) -> None:
    config = tmp_path / "models.toml"
    config.write_text(
        '[[models]]\nname = "a"\nexported = "a.pt2"\n\n[[models]]\nname = "b"\nonnx = "b.onnx"\n'
    )
    _, (a, b) = load_config_file(config)
    assert (a.exported, b.onnx) == ("a.pt2", "b.onnx")
    config.write_text('[[models]]\nname = "a"\nexported = "a.pt2"\nonnx = "a.onnx"\n')
    with pytest.raises(InvalidArgument, match="exactly one of arch, torchscript, exported, onnx"):
        load_config_file(config)
    config.write_text('[[models]]\nname = "a"\nonnx = "a.onnx"\nweights = "w.pt"\n')
    with pytest.raises(InvalidArgument, match="weights go with arch only"):
        load_config_file(config)


# Each layer of a graph builds its own session: the ResNet checks a few kinds of module.
RESNET_LAYERS = ("maxpool", "layer1.0", "layer2.0.downsample", "layer3", "layer4.1", "avgpool")


def test_onnx_layers_are_the_eager_modules(formats: Formats) -> None:
    """Every layer the graph lists is an eager module name with exactly its output."""
    eager, graph = formats.eager.primary, formats.onnx.primary
    assert graph.default_layer == eager.default_layer
    listed = graph.structure.spatial_layers()
    assert graph.default_layer in listed and set(listed) <= set(eager.structure.layers)
    assert_same_layer_outputs(
        eager, graph, listed if formats.eager.name == "demo" else RESNET_LAYERS
    )


@pytest.mark.slow
def test_every_onnx_resnet_layer_is_the_eager_module(resnet: Formats) -> None:
    graph = resnet.onnx.primary
    assert_same_layer_outputs(resnet.eager.primary, graph, graph.structure.spatial_layers())


def assert_same_layer_outputs(
    eager: ExplainableModel, graph: ExplainableModel, layers: Sequence[str]
) -> None:
    x = inputs()
    for layer in layers:
        want, want_logits = forward_with_layer(eager, x, layer)
        have, have_logits = forward_with_layer(graph, x, layer)
        scale = float(want.abs().max().clamp_min(1e-6))
        torch.testing.assert_close(have, want, rtol=0, atol=1e-4 * scale, msg=layer)
        torch.testing.assert_close(have_logits, want_logits, rtol=1e-4, atol=1e-4)


def test_onnx_leaves_out_folded_convolutions_and_repeated_calls(resnet: Formats) -> None:
    layers = resnet.onnx.primary.structure.layers
    # The exporter folds each batch norm into its convolution; ReLUs are called twice per block.
    assert not {"conv1", "bn1", "layer1.0.conv1", "layer1.0.relu", "layer1.0.relu_1"} & set(layers)
    assert {"relu", "maxpool", "layer1.0", "layer4", "layer4.1", "avgpool", "fc"} <= set(layers)


# Score-CAM and Ablation-CAM at a 64-channel layer of each model keep the passes few.
@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "eigencam"])
@pytest.mark.parametrize("model", ["resnet", "demo_formats"])
def test_onnx_layer_cams_match_eager(
    request: pytest.FixtureRequest, model: str, method: str
) -> None:
    chosen: Formats = request.getfixturevalue(model)
    layer = "layer1" if model == "resnet" else "features"
    # Ablation-CAM's weights are (y - y_k) / y: the rounding of the batch norms the ONNX
    # exporter folds into the convolutions reaches its maps amplified (up to 1.2e-4 of
    # the map's scale measured, with the CPU's kernels deciding the summation order).
    relative = 3e-4 if method == "ablationcam" else 1e-4
    assert_same_explanations(
        chosen.eager.primary, chosen.onnx.primary, method, relative, top_k=2, layer=layer
    )


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("feature_maps", {"options": {"top_k": 4}}),
        ("channel_profile", {}),
        ("eigencam", {}),
        ("embedding", {"layer": "layer3"}),
    ],
)
def test_onnx_activation_methods_match_eager(resnet: Formats, method: str, kwargs: object) -> None:
    assert_same_explanations(resnet.eager.primary, resnet.onnx.primary, method, **kwargs)  # type: ignore[arg-type]


def test_onnx_layer_can_be_named_by_its_graph_tensor(resnet: Formats) -> None:
    graph = resnet.onnx.primary
    tensor = "/layer4/layer4.1/relu_1/Relu_output_0"
    assert explain(graph, "channel_profile", inputs(), layer=tensor).layer == tensor
    expected = explain(resnet.eager.primary, "feature_maps", inputs(), layer="layer4")
    got = explain(graph, "feature_maps", inputs(), layer=tensor)
    for want, have in zip(expected.samples, got.samples, strict=True):
        torch.testing.assert_close(have.raw, want.raw, rtol=0, atol=1e-4)
    with pytest.raises(InvalidArgument, match=r"unknown layer 'layer9'.*valid layers: .*layer4"):
        explain(graph, "eigencam", inputs(), layer="layer9")


def test_onnx_ablationcam_refuses_a_layer_the_graph_does_not_split_at(resnet: Formats) -> None:
    """The downsample branch of a block is bypassed by the block's main path."""
    graph = resnet.onnx.primary
    layer = "layer2.0.downsample"
    assert graph.known_head(layer) is False and graph.head(layer) is None
    with pytest.raises(InvalidArgument, match=r"does not split there.*splits at: .*layer4"):
        explain(graph, "ablationcam", inputs(n=1), layer=layer)
    assert_same_explanations(resnet.eager.primary, graph, "eigencam", layer=layer)


@pytest.mark.slow
def test_onnx_scorecam_serves_a_layer_the_graph_does_not_split_at(resnet: Formats) -> None:
    assert_same_explanations(
        resnet.eager.primary, resnet.onnx.primary, "scorecam", layer="layer2.0.downsample"
    )


@pytest.mark.parametrize("method", ["ablationcam", "scorecam", "feature_maps"])
def test_onnx_serves_from_a_cached_activation(
    demo_formats: Formats, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = demo_formats.onnx.primary
    x = inputs(n=1)
    first = explain(graph, method, x)
    assert first.activations is not None and first.logits is not None
    cached = [CachedLayer(first.activations[0], first.logits[0])]

    def no_backbone(*_args: object) -> None:
        raise AssertionError("a cache hit must not run the graph up to the layer")

    monkeypatch.setattr(OnnxClassifier, "forward_with_layer", no_backbone)
    pixels = x if method == "scorecam" else torch.zeros_like(x)  # only Score-CAM reads them
    again = explain(graph, method, pixels, cached=cached)
    for want, have in zip(first.samples, again.samples, strict=True):
        torch.testing.assert_close(have.raw, want.raw)


def test_onnx_default_layer_comes_from_the_config(demo_formats: Formats) -> None:
    onnx_path = demo_formats.folder / "demo.onnx"
    spec = ModelSpec(
        name="demo", onnx=str(onnx_path), input_size=SIZE, default_layer="features.block2"
    )
    model = load_model(spec, CPU, BUDGET).primary
    assert model.default_layer == "features.block2"
    assert explain(model, "eigencam", inputs(n=1)).layer == "features.block2"
