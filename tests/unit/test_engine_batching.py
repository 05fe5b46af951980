"""Batching never changes a result, and several targets of one image share its passes.

Every test loops over the registry, so a newly registered method is covered
without editing this file.
"""

from __future__ import annotations

import pytest
import torch
from engine_models import (
    NUM_CLASSES,
    SMALL_OPTIONS,
    assert_close,
    images,
    leftover_hooks,
    rows_through,
    tiny_net,
    tiny_resnet,
)
from torch import nn

from camserve_server.methods import METHODS, BatchResult, SampleResult, explain
from camserve_server.models import ExplainableModel

# Methods built on differences of perturbed scores: the forward passes run in other
# batch compositions, so the scores differ in the last bits, and the differences (and
# heatmaps scaled by their range) agree to 1e-4 of the scale rather than to 1e-5.
PERTURBATION = frozenset({"scorecam", "ablationcam", "occlusion"})


@pytest.fixture(scope="module")
def model() -> ExplainableModel:
    return tiny_resnet()


def run(
    model: ExplainableModel,
    method: str,
    x: torch.Tensor,
    targets: list[list[int]] | None,
) -> BatchResult:
    return explain(model, method, x, targets=targets, options=SMALL_OPTIONS.get(method))


def assert_same_sample(method: str, batched: SampleResult, alone: SampleResult) -> None:
    """Every tensor of a sample's result agrees, within the method's tolerance."""
    tolerance = {"rel": 1e-4} if method in PERTURBATION else {"atol": 1e-5}
    assert torch.equal(batched.targets, alone.targets)
    assert torch.equal(batched.empty, alone.empty)
    assert batched.raw is not None and alone.raw is not None
    assert_close(batched.raw, alone.raw, **tolerance)
    if alone.heatmaps is None:
        assert batched.heatmaps is None
    else:
        assert batched.heatmaps is not None
        assert_close(batched.heatmaps, alone.heatmaps, atol=tolerance.get("rel", 1e-5))
    if alone.channels is None:
        assert batched.channels is None
    else:
        assert batched.channels is not None
        assert torch.equal(batched.channels, alone.channels)
    assert batched.metrics.keys() == alone.metrics.keys()
    for name, values in alone.metrics.items():
        assert_close(batched.metrics[name], values, atol=1e-4)
    assert_close(batched.logits, alone.logits, atol=1e-5)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_sample_in_a_batch_of_eight_equals_the_sample_alone(
    model: ExplainableModel, method: str
) -> None:
    x = images(8)
    targets = [[i] for i in range(8)] if METHODS[method].uses_targets else None
    batched = run(model, method, x, targets)
    assert len(batched.samples) == 8
    for i in range(8):
        alone = run(model, method, x[i : i + 1], [targets[i]] if targets else None)
        assert_same_sample(method, batched.samples[i], alone.samples[0])
    assert leftover_hooks(model.module) == []


@pytest.mark.parametrize("method", sorted(m for m, v in METHODS.items() if v.uses_targets))
def test_uneven_target_lists_in_one_batch_equal_each_sample_alone(
    model: ExplainableModel, method: str
) -> None:
    x = images(3, seed=1)
    targets = [[1, 2, 3], [4], [9, 0]]
    batched = run(model, method, x, targets)
    for i, sample_targets in enumerate(targets):
        assert batched.samples[i].targets.tolist() == sample_targets
        alone = run(model, method, x[i : i + 1], [sample_targets])
        assert_same_sample(method, batched.samples[i], alone.samples[0])


@pytest.mark.parametrize("method", sorted(m for m, v in METHODS.items() if v.uses_targets))
def test_more_targets_never_mean_more_forward_passes(model: ExplainableModel, method: str) -> None:
    x = images(2, seed=2)
    with rows_through(tiny_net(model).conv1) as one_target:
        run(model, method, x, [[1], [2]])
    with rows_through(tiny_net(model).conv1) as three_targets:
        run(model, method, x, [[1, 2, 3], [4, 5, 6]])
    assert sum(three_targets) == sum(one_target)
    assert len(three_targets) == len(one_target)


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_three_targets_of_one_image_take_exactly_one_forward(
    model: ExplainableModel, method: str
) -> None:
    with rows_through(model.module) as calls:
        result = explain(model, method, images(1), targets=[[1, 2, 3]])
    assert calls == [1]
    raw = result.samples[0].raw
    assert raw is not None and raw.shape[0] == 3
    assert not torch.equal(raw[0], raw[1]), "each target gets its own map"


def _backward_calls(
    module: nn.Module, calls: list[str], name: str
) -> torch.utils.hooks.RemovableHandle:
    def hook(_m: nn.Module, _gi: object, _go: object) -> None:
        calls.append(name)

    return module.register_full_backward_hook(hook)


@pytest.mark.parametrize(
    ("method", "reaches_input"),
    [("gradcam", False), ("gradcam++", False), ("layercam", False), ("saliency", True)],
)
def test_backward_stops_at_the_layer_and_never_touches_parameters(
    model: ExplainableModel, method: str, reaches_input: bool
) -> None:
    """CAM gradients stop at the layer (``layer2``): the block before it sees no backward.

    Saliency is the control: its backward must reach the same block, which shows the
    hook would notice a CAM backward that went too far.
    """
    net = tiny_net(model)
    calls: list[str] = []
    handle = _backward_calls(net.layer1, calls, "layer1")
    x = images(2, seed=3)
    try:
        result = explain(model, method, x, targets=[[1, 2], [3, 4]], layer="layer2")
    finally:
        handle.remove()
    assert bool(calls) == reaches_input
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    assert x.grad is None and not x.requires_grad
    assert all(s.raw is not None and bool(s.raw.abs().sum() > 0) for s in result.samples)
    assert leftover_hooks(net) == []


def test_top_k_targets_are_the_highest_logits(model: ExplainableModel) -> None:
    x = images(2, seed=4)
    result = explain(model, "gradcam", x, top_k=3)
    for sample in result.samples:
        assert sample.targets.tolist() == sample.logits.topk(3).indices.tolist()
        assert len(sample.targets) == 3
    assert result.samples[0].logits.shape == (NUM_CLASSES,)
