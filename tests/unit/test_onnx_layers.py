"""Layer names on an exported ONNX graph: nested and numbered scopes, repeated calls, pools."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from camserve_server.methods.layer_pass import forward_with_layer
from camserve_server.models import ExplainableModel
from camserve_server.models.onnx_model import MAX_CACHED_SESSIONS, OnnxClassifier

SIZE = (16, 16)


class _Block(nn.Module):
    """A numbered Sequential inside a Sequential, and one ReLU module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
            nn.Conv2d(4, 4, 3, padding=1),
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.relu(self.relu(self.seq(x)) + 1)
        return out


class _Net(nn.Module):
    """Blocks in a ModuleList (never called itself), an adaptive 2x2 pool, one linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.ModuleList([_Block()])
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(torch.flatten(self.pool(self.body[0](x)), 1))
        return out


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExplainableModel, ExplainableModel]:
    torch.manual_seed(0)
    module = _Net().eval()
    path = Path(tmp_path_factory.mktemp("onnx_layers")) / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.randn(2, 3, *SIZE),),
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )
    graph = OnnxClassifier(path, name="net", input_size=SIZE, device=torch.device("cpu"))
    return (
        ExplainableModel(module, input_size=SIZE, name="eager"),
        ExplainableModel(graph, input_size=SIZE, name="net"),
    )


def test_scopes_become_the_eager_module_names(
    twins: tuple[ExplainableModel, ExplainableModel],
) -> None:
    eager, graph = twins
    layers = set(graph.structure.layers)
    expected = {"body.0", "body.0.seq", "body.0.seq.0", "body.0.seq.0.0", "body.0.seq.0.1"}
    assert expected | {"body.0.seq.1", "pool", "fc"} == layers
    assert "body.0.relu" in eager.structure.layers  # called twice: the graph leaves it out
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    for layer in sorted(layers):
        want, _ = forward_with_layer(eager, x, layer)
        have, _ = forward_with_layer(graph, x, layer)
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5, msg=layer)


def test_the_pool_before_the_classifier_is_not_the_default_layer(
    twins: tuple[ExplainableModel, ExplainableModel],
) -> None:
    eager, graph = twins
    assert graph.structure.layers["pool"].shape == (1, 4, 2, 2)
    assert graph.default_layer == eager.default_layer == "body.0"


def test_sessions_per_layer_are_bounded(twins: tuple[ExplainableModel, ExplainableModel]) -> None:
    _, graph = twins
    assert isinstance(graph.graph, OnnxClassifier)
    x = torch.randn(1, 3, *SIZE)
    assert len(graph.structure.layers) > MAX_CACHED_SESSIONS
    for layer in graph.structure.layers:
        graph.head(layer)
        activation, logits = graph.graph.forward_with_layer(x, layer)
        assert activation.shape[1:] == graph.structure.layers[layer].shape[1:]
        assert logits.shape == (1, 3)
        assert graph.graph.cached_sessions <= 2 * MAX_CACHED_SESSIONS
