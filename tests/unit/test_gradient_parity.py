"""Parity of the gradient and perturbation attributions with Captum, the reference METHODS.md names.

Every method runs in the engine and in Captum on the same torchvision model
(seeded random weights), input and target; the raw attributions must agree to
``max |engine - captum| <= 1e-4 * max |captum|``. Captum gets the twin copy of
the weights (``ZooModel.reference``), so hooks it attaches never touch the
engine's module. Every comparison asserts that the reference attribution is
not all zero, so none passes vacuously.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    Occlusion,
    Saliency,
)
from parity_rows import engine_rows

from camserve_server.methods import explain
from zoo import ZooModel

TOLERANCE = 1e-4
RecordProperty = Callable[[str, object], None]


def row_inputs(x: torch.Tensor, targets: list[list[int]]) -> tuple[torch.Tensor, list[int]]:
    """One input per (sample, target) row and its class, as Captum takes them."""
    samples = [i for i, classes in enumerate(targets) for _ in classes]
    return x[samples].clone(), [c for classes in targets for c in classes]


def two_then_one_targets(zoo: ZooModel) -> list[list[int]]:
    """The top two classes of the first image, the top class of the second.

    The engine shares one forward among an image's targets; Captum sees one
    (image, target) pair per row.
    """
    return [zoo.top_classes(zoo.x[:1], 2)[0], zoo.top_classes(zoo.x[1:], 1)[0]]


def assert_matches(
    actual: torch.Tensor, expected: torch.Tensor, record_property: RecordProperty
) -> None:
    """``max |actual - expected| <= 1e-4 * max |expected|``, the reference not all zero."""
    scale = float(expected.abs().max())
    assert scale > 0, "the reference attribution is all zero"
    relative = float((actual - expected).abs().max()) / scale
    record_property("max_rel_diff", relative)
    assert relative <= TOLERANCE


# method -> (Captum class, keyword arguments of its ``attribute``)
GRADIENT_METHODS: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "saliency": (Saliency, {"abs": True}),
    "input_x_gradient": (InputXGradient, {}),
    "guided_backprop": (GuidedBackprop, {}),
    "deconvnet": (Deconvolution, {}),
}


@pytest.mark.parametrize("method", list(GRADIENT_METHODS))
def test_input_gradient_methods_match_captum(
    zoo_model: ZooModel, method: str, record_property: RecordProperty
) -> None:
    x, targets = zoo_model.x, two_then_one_targets(zoo_model)
    actual = engine_rows(zoo_model, method, x, targets, "raw")
    captum_class, arguments = GRADIENT_METHODS[method]
    inputs, classes = row_inputs(x, targets)
    expected = captum_class(zoo_model.reference).attribute(inputs, target=classes, **arguments)
    assert_matches(actual, expected.detach(), record_property)


def test_integrated_gradients_match_captum_defaults(
    zoo_model: ZooModel, record_property: RecordProperty
) -> None:
    # Captum's defaults: 50 Gauss-Legendre steps from a zero baseline, as the engine's.
    x = zoo_model.x[:1]
    targets = zoo_model.top_classes(x, 1)
    actual = engine_rows(zoo_model, "integrated_gradients", x, targets, "raw")
    inputs, classes = row_inputs(x, targets)
    expected = IntegratedGradients(zoo_model.reference).attribute(inputs, target=classes)
    assert_matches(actual, expected.detach(), record_property)


def test_integrated_gradients_report_their_completeness_gap(zoo_model: ZooModel) -> None:
    # With 4 steps the quadrature is coarse: the gap is far from 0, so a metric that
    # dropped a term or its sign could not pass.
    x, targets = zoo_model.x, two_then_one_targets(zoo_model)
    result = explain(
        zoo_model.model, "integrated_gradients", x, targets=targets, options={"steps": 4}
    )
    with torch.no_grad():
        scores = zoo_model.reference(x)
        baseline_scores = zoo_model.reference(torch.zeros_like(x[:1]))[0]
    for i, (sample, classes) in enumerate(zip(result.samples, targets, strict=True)):
        assert sample.raw is not None
        attribution_sums = sample.raw.flatten(1).sum(dim=1)
        score_changes = scores[i, classes] - baseline_scores[classes]
        expected = attribution_sums - score_changes
        tolerance = 1e-4 * float(torch.cat([attribution_sums, score_changes]).abs().max())
        assert bool((expected.abs() > 10 * tolerance).all()), "the gap is too small to test"
        gap = sample.metrics["completeness_gap"]
        assert float((gap - expected).abs().max()) <= tolerance


@pytest.mark.parametrize(
    ("window", "stride", "fill"),
    [
        ((16, 16), (16, 16), 0.0),  # windows tile the 64x64 input exactly
        ((20, 20), (12, 12), 0.0),  # starts 0, 12, ..., 48: the last window is clipped
        ((12, 24), (8, 20), 0.5),  # clipped along the height only, non-zero fill
    ],
)
def test_occlusion_matches_captum(
    zoo_model: ZooModel,
    window: tuple[int, int],
    stride: tuple[int, int],
    fill: float,
    record_property: RecordProperty,
) -> None:
    x = zoo_model.x[:1]
    targets = zoo_model.top_classes(x, 1)
    options: dict[str, object] = {"window": list(window), "stride": list(stride), "fill": fill}
    actual = engine_rows(zoo_model, "occlusion", x, targets, "raw", options=options)
    inputs, classes = row_inputs(x, targets)
    expected = Occlusion(zoo_model.reference).attribute(
        inputs,
        sliding_window_shapes=(3, *window),
        strides=(3, *stride),
        baselines=fill,
        target=classes,
        perturbations_per_eval=32,
    )
    assert_matches(actual, expected.detach(), record_property)
