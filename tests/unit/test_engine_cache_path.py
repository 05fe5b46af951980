"""The server's cache path: a cached layer activation gives the same result and skips
the backbone (the modules before the layer are not called for a cached row).
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from engine_models import (
    SMALL_OPTIONS,
    assert_close,
    images,
    leftover_hooks,
    rows_through,
    torchvision_model,
)

from camserve_server.methods import METHODS, BatchResult, CachedLayer, SampleResult, explain
from camserve_server.models import ExplainableModel

TARGETS = [[1], [2, 3], [4]]
CACHED_ROWS = (0, 2)  # sample 1 is computed, samples 0 and 2 come from the cache
PERTURBATION = frozenset({"scorecam", "ablationcam"})


class Case(NamedTuple):
    """A layer to read from the cache: block outputs of three families, pooled layers for
    ``cam`` (which applies to GAP + linear models only) and few-channel layers for the
    heavy methods, which cost one pass per channel and image.
    """

    arch: str
    layer: str
    size: int
    heavy: bool = False
    cam: bool = False
    only_cam: bool = False
    heavy_is_slow: bool = False  # a few seconds per heavy method: marked slow


LAYERS = [
    Case("resnet18", "layer1", 32, heavy=True, heavy_is_slow=True),
    Case("resnet18", "layer4", 64, cam=True),
    Case("mobilenet_v3_small", "features.3", 64, heavy=True),
    Case("mobilenet_v3_small", "features", 64),
    Case("vgg11_bn", "features", 64),
    Case("mobilenet_v2", "features", 64, cam=True, only_cam=True),
]
HEAVY_MAX_CHANNELS = 64


def applies(method: str, case: Case) -> bool:
    if method == "cam":
        return case.cam
    return not case.only_cam and (case.heavy or not METHODS[method].heavy)


CASES = [
    pytest.param(
        case,
        method,
        id=f"{case.arch}-{case.layer}-{method}",
        marks=[pytest.mark.slow] if case.heavy_is_slow and METHODS[method].heavy else [],
    )
    for case in LAYERS
    for method in sorted(m for m, v in METHODS.items() if v.caches_layer)
    if applies(method, case)
]


def first_module(model: ExplainableModel) -> torch.nn.Module:
    """The first convolution: every backbone pass goes through it."""
    module = model.submodule(model.structure.conv_layers[0])
    assert isinstance(module, torch.nn.Conv2d)
    return module


def run(
    model: ExplainableModel,
    method: str,
    layer: str,
    x: torch.Tensor,
    cached: list[CachedLayer | None] | None = None,
    rows: tuple[int, ...] = (0, 1, 2),
) -> BatchResult:
    """Explain the images ``x[rows]`` with their ``TARGETS``."""
    targets = [TARGETS[i] for i in rows] if METHODS[method].uses_targets else None
    options = SMALL_OPTIONS.get(method)
    return explain(
        model, method, x[list(rows)], targets=targets, layer=layer, options=options, cached=cached
    )


def from_cache(result: BatchResult, rows: tuple[int, ...]) -> list[CachedLayer | None]:
    """Cache entries for ``rows`` as the server stores them: one activation and logits each."""
    assert result.activations is not None and result.logits is not None
    return [
        CachedLayer(result.activations[i].clone(), result.logits[i].clone()) if i in rows else None
        for i in range(result.activations.shape[0])
    ]


def assert_same_sample(method: str, a: SampleResult, b: SampleResult) -> None:
    tolerance = {"rel": 1e-4} if method in PERTURBATION else {"atol": 1e-5}
    assert torch.equal(a.targets, b.targets)
    assert torch.equal(a.empty, b.empty)
    assert a.raw is not None and b.raw is not None
    assert_close(a.raw, b.raw, **tolerance)
    if b.heatmaps is not None:
        assert a.heatmaps is not None
        assert_close(a.heatmaps, b.heatmaps, atol=tolerance.get("rel", 1e-5))
    assert_close(a.logits, b.logits, atol=1e-5)


def assert_same_results(
    method: str, result: BatchResult, expected: list[tuple[BatchResult, int]]
) -> None:
    """``result``'s sample ``i`` equals sample ``expected[i][1]`` of ``expected[i][0]``."""
    assert result.activations is not None
    assert len(result.samples) == len(expected)
    for i, (reference, j) in enumerate(expected):
        assert reference.layer == result.layer
        assert reference.activations is not None
        assert_same_sample(method, result.samples[i], reference.samples[j])
        assert_close(result.activations[i], reference.activations[j], atol=1e-5)


@pytest.mark.parametrize(("case", "method"), CASES)
def test_cached_rows_give_the_same_result_without_the_backbone(case: Case, method: str) -> None:
    model = torchvision_model(case.arch, case.size)
    layer = case.layer
    channels = model.structure.layers[layer].shape[1]
    assert channels <= HEAVY_MAX_CHANNELS or not case.heavy
    assert layer == model.structure.default_layer or not case.cam
    model.head(layer)  # built once per layer, with a probe forward of its own
    x = images(3, size=case.size)
    with rows_through(first_module(model)) as fresh_rows:
        fresh = run(model, method, layer, x)
    with rows_through(first_module(model)) as mixed_rows:
        mixed = run(model, method, layer, x, from_cache(fresh, CACHED_ROWS))
    with rows_through(first_module(model)) as cached_rows:
        cached = run(model, method, layer, x, from_cache(fresh, (0, 1, 2)))
    # The computed row ran alone in the mixed batch: compare it with itself run alone,
    # so that only caching, not the batch composition, can make a difference.
    alone = run(model, method, layer, x, rows=(1,))
    assert_same_results(method, mixed, [(fresh, 0), (alone, 0), (fresh, 2)])
    assert_same_results(method, cached, [(fresh, 0), (fresh, 1), (fresh, 2)])
    # Each cached row saves exactly its one backbone pass ...
    assert sum(mixed_rows) == sum(fresh_rows) - len(CACHED_ROWS)
    assert sum(cached_rows) == sum(fresh_rows) - 3
    # ... and a method that needs nothing but the activation never runs the backbone.
    if sum(fresh_rows) == 3:
        assert mixed_rows == [1]
        assert cached_rows == []
    assert leftover_hooks(model.module) == []


def test_every_cache_reading_method_is_tested_on_two_families() -> None:
    families: dict[str, set[str]] = {}
    for param in CASES:
        case, method = param.values
        assert isinstance(case, Case)
        families.setdefault(str(method), set()).add(case.arch)
    cache_readers = {m for m, v in METHODS.items() if v.caches_layer}
    assert set(families) == cache_readers
    assert all(len(archs) >= 2 for archs in families.values()), families


@pytest.mark.parametrize(
    ("arch", "layer"),
    [
        ("resnet18", "layer1"),
        ("resnet18", "layer2"),
        ("resnet18", "layer3"),
        ("resnet18", "layer4"),
        ("vgg11_bn", "features.3"),
        ("vgg11_bn", "features"),
        ("mobilenet_v3_small", "features.1"),
        ("mobilenet_v3_small", "features.8"),
        ("mobilenet_v3_small", "features"),
    ],
)
def test_a_block_output_splits_off_a_head(arch: str, layer: str) -> None:
    """The head after a block computes the logits from its activation alone."""
    model = torchvision_model(arch, 64)
    head = model.head(layer)
    assert head is not None
    x = images(2, size=64, seed=5)
    fresh = explain(model, "channel_profile", x, layer=layer)
    assert fresh.activations is not None and fresh.logits is not None
    with torch.inference_mode(), rows_through(first_module(model)) as rows:
        logits = head(fresh.activations.clone())
    assert rows == []
    assert_close(logits, fresh.logits, atol=1e-5, rel=1e-5)


def test_a_layer_inside_a_skip_connection_has_no_head_but_the_cache_still_works() -> None:
    """Inside a residual block the head would need the block's input: no split, and a
    cached row falls back to a full forward that substitutes the activation.
    """
    model = torchvision_model("resnet18", 64)
    layer = "layer2.0.bn2"
    assert model.head(layer) is None
    x = images(2, size=64, seed=6)
    fresh = explain(model, "gradcam", x, targets=[[1], [2]], layer=layer)
    cached = explain(
        model, "gradcam", x, targets=[[1], [2]], layer=layer, cached=from_cache(fresh, (0, 1))
    )
    assert_same_results("gradcam", cached, [(fresh, 0), (fresh, 1)])


@pytest.mark.parametrize(
    ("arch", "layer", "classifier"),
    [
        ("resnet18", "layer4", "fc"),
        ("vgg11_bn", "features", "classifier.6"),
        ("mobilenet_v3_small", "features.8", "classifier.3"),
    ],
)
def test_a_head_ending_in_a_linear_classifier_splits_before_it(
    arch: str, layer: str, classifier: str
) -> None:
    """A cache hit's gradient needs only the target rows of the final linear layer."""
    model = torchvision_model(arch, 64)
    linear = model.linear_head(layer)
    assert linear is not None
    assert linear.weight is model.submodule(classifier).weight
    x = images(2, size=64, seed=7)
    fresh = explain(model, "channel_profile", x, layer=layer)
    assert fresh.activations is not None and fresh.logits is not None
    with torch.inference_mode():
        features = linear.features(fresh.activations.clone())
        targets = torch.tensor([3, 7])
        scores = linear.scores(features, targets)
    assert features.dim() == 2
    assert_close(scores, fresh.logits[torch.arange(2), targets], atol=1e-5, rel=1e-5)


class ScaledLogits(torch.nn.Module):
    """A classifier whose last operation is not its linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.fc(self.pool(self.features(x)).flatten(1))
        return logits * 2.0


def test_a_head_that_ends_otherwise_runs_whole_and_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = ExplainableModel(ScaledLogits(), input_size=(16, 16), default_layer="features")
    assert model.head("features") is not None
    assert model.linear_head("features") is None
    x = images(2, size=16, seed=8)
    fresh = explain(model, "gradcam", x, targets=[[1, 4], [2]], layer="features")
    cached = explain(
        model,
        "gradcam",
        x,
        targets=[[1, 4], [2]],
        layer="features",
        cached=from_cache(fresh, (0, 1)),
    )
    assert_same_results("gradcam", cached, [(fresh, 0), (fresh, 1)])
