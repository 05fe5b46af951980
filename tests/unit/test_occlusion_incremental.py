"""Occlusion by incremental inference: the same map as full forward passes and Captum.

The changed regions agree with a brute-force receptive field; the incremental map of
seeded torchvision models (odd sizes, clipped border windows) equals today's path and
Captum's ``Occlusion`` to ``1e-4`` of its largest value; a model the path cannot follow
runs today's path, and so does one whose plan would save too little work; the result's
variant says which ran.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

from camserve_server.methods.base import BatchInput, BatchResult, TargetRequest
from camserve_server.methods.chunking import between_chunks
from camserve_server.methods.incremental.execute import (
    estimated_work,
    incremental_occluded_logits,
)
from camserve_server.methods.incremental.graph import activations, traced
from camserve_server.methods.incremental.plan import plan_nodes
from camserve_server.methods.incremental.regions import Reach, through_window
from camserve_server.methods.incremental.work import MIN_SPEEDUP
from camserve_server.methods.occlusion import INCREMENTAL_VARIANT, Occlusion, window_starts
from camserve_server.models import ExplainableModel
from zoo import NUM_CLASSES, ZooModel, zoo_model_of

TOLERANCE = 1e-4


def zoo(arch: str) -> ZooModel:
    torch.manual_seed(0)
    module = torchvision.models.get_model(arch, weights=None, num_classes=NUM_CLASSES)
    return zoo_model_of(arch, module, "", "", seed=0)


def occlusion(
    model: ExplainableModel, x: torch.Tensor, incremental: bool, **options: Any
) -> BatchResult:
    defaults: dict[str, Any] = {"window": (12, 12), "stride": (8, 8), "fill": 0.0}
    defaults.update(batch_size=0, incremental=incremental)
    defaults.update(options)
    targets = [TargetRequest(top_k=2)] * x.shape[0]
    batch = BatchInput(model, x, targets, None, defaults, [None] * x.shape[0])
    return Occlusion().run(batch)


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = float(expected.abs().max())
    assert scale > 0, "the reference attribution is all zero"
    return float((actual - expected).abs().max()) / scale


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation"),
    [(3, 1, 1, 1), (7, 2, 3, 1), (3, 2, 1, 1), (1, 2, 0, 1), (3, 1, 2, 2), (2, 2, 0, 1)],
)
def test_regions_are_the_outputs_whose_receptive_field_touches_the_box(
    kernel: int, stride: int, padding: int, dilation: int
) -> None:
    reach = Reach(kernel, stride, padding, dilation)
    ones = torch.ones(1, 1, kernel, kernel)
    for box in [(0, 3, 0, 5), (4, 9, 10, 13), (13, 17, 15, 17), (5, 6, 7, 8)]:
        marked = torch.zeros(1, 1, 17, 17)
        marked[..., box[0] : box[1], box[2] : box[3]] = 1
        touched = F.conv2d(marked, ones, None, stride, padding, dilation)[0, 0] > 0
        size = (touched.shape[0], touched.shape[1])
        region = through_window(torch.tensor([box]), reach, reach, size)[0].tolist()
        rows, cols = touched.any(dim=1).nonzero(), touched.any(dim=0).nonzero()
        if len(rows) == 0:
            assert region[0] >= region[1]
            continue
        expected = [int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1]
        assert region == expected


@pytest.mark.parametrize(
    ("window", "stride", "size"),
    [((12, 12), (8, 8), (67, 75)), ((16, 10), (16, 6), (64, 64)), ((7, 7), (5, 5), (71, 65))],
)
def test_resnet18_incremental_equals_full_passes_and_captum(
    window: tuple[int, int], stride: tuple[int, int], size: tuple[int, int]
) -> None:
    model = zoo("resnet18")
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(3))
    options = {"window": window, "stride": stride, "fill": 0.5}
    fast = occlusion(model.model, x, True, **options)
    full = occlusion(model.model, x, False, **options)
    assert (fast.variant, full.variant) == (INCREMENTAL_VARIANT, "occlusion")
    for fast_sample, full_sample, image in zip(fast.samples, full.samples, x, strict=True):
        assert fast_sample.raw is not None and full_sample.raw is not None
        assert fast_sample.targets.tolist() == full_sample.targets.tolist()
        assert relative(fast_sample.raw, full_sample.raw) <= TOLERANCE
        targets = fast_sample.targets.tolist()
        expected = CaptumOcclusion(model.reference).attribute(
            image[None].expand(len(targets), -1, -1, -1).clone(),
            sliding_window_shapes=(3, *window),
            strides=(3, *stride),
            baselines=0.5,
            target=targets,
            perturbations_per_eval=64,
        )
        assert relative(fast_sample.raw, expected) <= TOLERANCE


@pytest.mark.parametrize("arch", ["resnet50", "vgg11_bn", "densenet121"])
def test_other_architectures_equal_full_passes(arch: str) -> None:
    model = zoo(arch)
    x = torch.randn(1, 3, 66, 69, generator=torch.Generator().manual_seed(4))
    fast = occlusion(model.model, x, True)
    full = occlusion(model.model, x, False)
    assert fast.variant == INCREMENTAL_VARIANT
    assert fast.samples[0].raw is not None and full.samples[0].raw is not None
    assert relative(fast.samples[0].raw, full.samples[0].raw) <= TOLERANCE


def test_a_plan_that_saves_too_little_runs_full_passes_yet_computes_the_same() -> None:
    # MobileNetV3 pools globally in its second block: nearly everything runs in full
    model = zoo("mobilenet_v3_small").model
    x = torch.randn(1, 3, 66, 69, generator=torch.Generator().manual_seed(4))
    windows = [(t, s) for t in window_starts(66, 12, 8) for s in window_starts(69, 12, 8)]
    work = estimated_work(model, x, windows, (12, 12))
    assert work is not None and work.speedup < MIN_SPEEDUP
    assert occlusion(model, x, True).variant == "occlusion"
    with torch.inference_mode():
        logits = model.forward(x)
        occluded = x.expand(len(windows), -1, -1, -1).clone()
        for row, (top, left) in enumerate(windows):
            occluded[row, :, top : top + 12, left : left + 12] = 0.0
        expected = model.forward(occluded)
    forced = incremental_occluded_logits(model, x, logits, windows, (12, 12), 0.0, 0, min_speedup=0)
    assert forced is not None and not forced.cut
    assert relative(forced.logits[0], expected) <= TOLERANCE


def plan_modes(arch: str, size: int, window: int, stride: int) -> dict[str, str]:
    torch.manual_seed(0)
    module = torchvision.models.get_model(arch, weights=None).eval()
    graph = traced(module)
    assert graph is not None
    with torch.inference_mode():
        values = activations(graph, torch.randn(1, 3, size, size))
    starts = torch.tensor(
        [
            (t, s)
            for t in window_starts(size, window, stride)
            for s in window_starts(size, window, stride)
        ]
    )
    regions = torch.stack(
        [
            starts[:, 0],
            (starts[:, 0] + window).clamp(max=size),
            starts[:, 1],
            (starts[:, 1] + window).clamp(max=size),
        ],
        dim=1,
    )
    return {node.name: plan.mode for node, plan in plan_nodes(graph, values, regions).items()}


def test_plans_reuse_early_layers_and_run_global_operators_in_full() -> None:
    resnet = plan_modes("resnet18", 224, 16, 8)
    assert resnet["conv1"] == resnet["layer2_1_conv2"] == "window"
    assert resnet["layer1_0_bn1"] == resnet["add"] == "local"
    assert resnet["avgpool"] == resnet["fc"] == "full"
    # squeeze-excitation pools globally in the second block: from there on, all in full
    mobilenet = plan_modes("mobilenet_v3_small", 224, 16, 8)
    assert mobilenet["features_0_0"] == "window"
    assert mobilenet["features_1_block_1_avgpool"] == "full"
    assert mobilenet["features_2_block_0_0"] == "full"


class Branching(nn.Module):
    """Control flow on a tensor's value: ``torch.fx`` cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.conv(x)
        if y.mean() > 0:
            y = -y
        logits: torch.Tensor = self.fc(y.mean(dim=(2, 3)))
        return logits


def test_models_the_path_cannot_follow_run_full_passes() -> None:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    model = ExplainableModel(Branching(), input_size=(32, 32), name="branching")
    assert occlusion(model, x, True).variant == "occlusion"
    normalised = nn.Sequential(
        nn.InstanceNorm2d(3),  # global statistics first: every layer runs in full
        nn.Conv2d(3, 4, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, NUM_CLASSES),
    )
    flat = ExplainableModel(normalised, input_size=(32, 32), name="normalised")
    assert occlusion(flat, x, True).variant == "occlusion"  # no layer to reuse


def test_chunks_give_the_device_up_between_them() -> None:
    model = zoo("resnet18")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    calls: list[None] = []
    with between_chunks(lambda: calls.append(None)):
        result = occlusion(model.model, x, True, batch_size=16)
    windows = len(window_starts(64, 12, 8)) ** 2
    assert result.variant == INCREMENTAL_VARIANT
    assert len(calls) == -(-windows // 16) - 1


class ConstantTable(nn.Module):
    """A learned ``(1, D)`` projection read after a global step: a constant of the graph
    whose first axis is not the batch, never repeated across copies as an activation is."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.projection = nn.Parameter(torch.randn(1, 16 * 32 * 32))
        self.fc = nn.Linear(1, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        y = y - y.mean()
        logits: torch.Tensor = self.fc(F.linear(y.flatten(1), self.projection))
        return logits


def test_graph_constants_stay_as_they_are_when_layers_run_in_full() -> None:
    torch.manual_seed(0)
    model = ExplainableModel(ConstantTable().eval(), input_size=(64, 64), name="table")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    fast = occlusion(model, x, True, batch_size=5)
    full = occlusion(model, x, False, batch_size=5)
    assert fast.variant == INCREMENTAL_VARIANT
    assert fast.samples[0].raw is not None and full.samples[0].raw is not None
    assert relative(fast.samples[0].raw, full.samples[0].raw) <= TOLERANCE


class PositionalMap(nn.Module):
    """A learned ``(1, C, H, W)`` map added to a convolution's output: a constant of the
    graph that a box reads as it reads an unchanged activation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.position = nn.Parameter(torch.randn(1, 16, 32, 32))
        self.fc = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x) + self.position)
        logits: torch.Tensor = self.fc(y.mean(dim=(2, 3)))
        return logits


def test_boxes_read_constant_maps_of_the_graph() -> None:
    torch.manual_seed(0)
    model = ExplainableModel(PositionalMap().eval(), input_size=(64, 64), name="position")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    fast = occlusion(model, x, True)
    full = occlusion(model, x, False)
    assert fast.variant == INCREMENTAL_VARIANT
    assert fast.samples[0].raw is not None and full.samples[0].raw is not None
    assert relative(fast.samples[0].raw, full.samples[0].raw) <= TOLERANCE


def test_a_budget_too_small_for_the_cached_outputs_runs_full_passes() -> None:
    model = zoo("resnet18").model
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(10))
    row = model.structure.activation_bytes  # one copy's outputs, as the chunks count them
    roomy = ExplainableModel(model.module, input_size=(64, 64), name="roomy")
    roomy.memory_budget_bytes = 8 * row
    tight = ExplainableModel(model.module, input_size=(64, 64), name="tight")
    tight.memory_budget_bytes = 2 * row  # the outputs and their rows alone take more
    assert occlusion(roomy, x, True).variant == INCREMENTAL_VARIANT
    assert occlusion(tight, x, True).variant == "occlusion"
