"""The evaluation's parts against closed forms and references: Spearman against scipy,
the pointing game's geometry, and the cascading randomisation's order and determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torchvision
from scipy.stats import spearmanr
from torch import nn

from camserve_server.evaluation.correlation import spearman_rows
from camserve_server.evaluation.events import SanityResult, SanityStage, Summary
from camserve_server.evaluation.pointing import hits, to_input_frame
from camserve_server.evaluation.randomisation import (
    RandomisedCopy,
    cascade,
    parameterised_layers,
    reinitialise,
)
from camserve_server.models.preprocess import Placement


def test_spearman_equals_scipys_with_ties() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((5, 12, 12)).astype(np.float32)
    b = (a + rng.normal(scale=0.3, size=a.shape)).astype(np.float32)
    a[:, :4] = 0.0  # ties, as a ReLU'd map has
    b[1, 6:] = 0.25
    expected = [spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(5)]
    assert spearman_rows(a, b) == pytest.approx(expected, abs=1e-12)


def test_a_constant_map_is_no_agreement_and_two_are_undefined() -> None:
    varying = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    flat = np.zeros((1, 4, 4), dtype=np.float32)
    assert spearman_rows(varying, flat)[0] == 0.0
    assert np.isnan(spearman_rows(flat, flat)[0])
    assert spearman_rows(varying, varying)[0] == pytest.approx(1.0)


def test_the_pointing_game_hits_within_the_tolerance_of_a_box() -> None:
    peak = np.zeros((32, 32), dtype=np.float32)
    peak[10, 20] = 1.0  # row 10, column 20
    assert hits(peak, ((18.0, 8.0, 22.0, 12.0),), 0) == 1.0
    assert hits(peak, ((21.0, 10.0, 30.0, 11.0),), 0) == 0.0  # x0 = 21 leaves column 20 out
    assert hits(peak, ((21.0, 10.0, 30.0, 11.0),), 1) == 1.0
    # the box's nearest pixel to (20, 10) is (9, 9): sqrt(11^2 + 1^2) = 11.05 away
    assert hits(peak, ((0.0, 0.0, 10.0, 10.0),), 11) == 0.0
    assert hits(peak, ((0.0, 0.0, 10.0, 10.0),), 11.1) == 1.0
    assert hits(peak, ((0.0, 0.0, 10.0, 11.0),), 11) == 1.0  # (9, 10): 11 away
    assert np.isnan(hits(peak, (), 15))
    assert hits(peak, ((0.0, 0.0, 1.0, 1.0), (19.5, 9.5, 20.5, 10.5)), 0) == 1.0


def test_boxes_follow_the_resize_and_centre_crop_onto_the_input() -> None:
    # a 200 x 100 picture (width x height) resized to 128 x 64 and cropped to 64 x 64
    placement = Placement(original_size=(100, 200), crop=(0.0, 50.0, 100.0, 100.0))
    assert to_input_frame((50.0, 0.0, 150.0, 100.0), placement, (64, 64)) == (0, 0, 64, 64)
    assert to_input_frame((100.0, 50.0, 150.0, 75.0), placement, (64, 64)) == (32, 32, 64, 48)
    assert to_input_frame((1.0, 2.0, 3.0, 4.0), None, (64, 64)) == (1.0, 2.0, 3.0, 4.0)


def test_layers_are_found_in_forward_order_and_cascade_from_the_output() -> None:
    model = torchvision.models.resnet18(num_classes=10).eval()
    layers = parameterised_layers(model, torch.zeros(1, 3, 32, 32))
    assert layers[:2] == ["conv1", "bn1"]
    assert layers[-1] == "fc"
    assert "layer4.1.bn2" in layers and "layer2.0.downsample.0" in layers
    assert len(layers) == 41  # 20 convolutions, 20 batch norms, the linear layer
    stages = cascade(layers, 5)
    assert len(stages) == 5
    assert stages[0].layers[0] == "fc"
    assert stages[-1].layers == tuple(reversed(layers))
    assert all(len(b.layers) > len(a.layers) for a, b in itertools.pairwise(stages))
    assert len(cascade(layers[:3], 5)) == 3  # fewer layers than stages: one per stage


def test_reinitialisation_is_seeded_and_restorable() -> None:
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)
    model = nn.Sequential(conv, norm, nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).eval()
    norm.get_buffer("running_mean").fill_(0.5)
    first, second = RandomisedCopy(model, seed=7), RandomisedCopy(model, seed=7)
    for copy in (first, second):
        copy.randomise(cascade(["0", "1", "3"], 3)[-1])
    for a, b in zip(first.module.parameters(), second.module.parameters(), strict=True):
        assert torch.equal(a, b)
    fresh = dict(first.module.named_parameters())
    assert not torch.equal(fresh["0.weight"], conv.weight)
    bound = 1 / (3 * 3 * 3) ** 0.5  # torch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert fresh["0.weight"].abs().max() <= bound and fresh["0.bias"].abs().max() <= bound
    assert torch.equal(first.module.get_buffer("1.running_mean"), torch.zeros(8))
    assert torch.equal(fresh["1.weight"], torch.ones(8))
    first.reset()
    for a, b in zip(first.module.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_reinitialised_tensors_keep_their_identity() -> None:
    layer = nn.Linear(5, 3)
    weight = layer.weight
    reinitialise(layer, 1)
    assert layer.weight is weight


def _stage(mean: float) -> SanityStage:
    return SanityStage("x", 1, Summary(np.array([mean, np.nan])))


def test_the_verdict_reads_the_stage_where_maps_change_least() -> None:
    guided = SanityResult((_stage(0.8), _stage(0.2)), threshold=0.5)
    gradcam = SanityResult((_stage(0.1), _stage(0.4)), threshold=0.5)
    blank = SanityResult((_stage(float("nan")),), threshold=0.5)
    assert guided.correlation == pytest.approx(0.8) and not guided.passed
    assert gradcam.correlation == pytest.approx(0.4) and gradcam.passed
    assert np.isnan(blank.correlation) and not blank.passed
