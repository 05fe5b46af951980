"""Parity of the CAM family with pytorch-grad-cam, the reference METHODS.md names.

Every method runs in the engine and in pytorch-grad-cam on the same torchvision
model (seeded random weights), layer, input and target, and the heatmaps must
agree to 1e-4 (max abs). The exceptions are the ones METHODS.md states:
Eigen-CAM agrees up to the sign of the projection, and Ablation-CAM only at
layers whose minimum is 0 (post-ReLU), so it is compared there. Every
comparison asserts that the reference maps are not constant, so none passes
vacuously on empty maps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from parity_rows import (
    GRADIENT_CAMS,
    TARGETS_PER_IMAGE,
    TOLERANCE,
    engine_rows,
    layer_activation,
    max_difference,
    non_constant,
    reference_heatmaps,
)
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    ScoreCAM,
)
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

from camserve_server.methods import explain
from zoo import NUM_CLASSES, ZooModel

RecordProperty = Callable[[str, object], None]


@pytest.mark.parametrize("method", list(GRADIENT_CAMS))
def test_gradient_cams_match_pytorch_grad_cam(
    zoo_model: ZooModel, method: str, record_property: RecordProperty
) -> None:
    # Two images with three targets each: the engine shares one forward among an
    # image's targets, pytorch-grad-cam sees one (image, target) pair per row.
    targets = zoo_model.top_classes(zoo_model.x, TARGETS_PER_IMAGE)
    actual = engine_rows(zoo_model, method, zoo_model.x, targets, "heatmaps", layer=zoo_model.layer)
    expected = reference_heatmaps(
        GRADIENT_CAMS[method],
        zoo_model.reference,
        zoo_model.layer,
        zoo_model.x.repeat_interleave(TARGETS_PER_IMAGE, dim=0),
        [c for classes in targets for c in classes],
    )
    assert int(non_constant(expected).sum()) >= 3, "too few non-empty reference maps to compare"
    difference = max_difference(actual, expected)
    record_property("max_abs_diff", difference)
    assert difference <= TOLERANCE


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_perturbation_cams_match_pytorch_grad_cam(
    zoo_model: ZooModel, method: str, record_property: RecordProperty
) -> None:
    # One forward per channel, so compared at a layer with few channels. Its minimum is
    # 0 (ReLU outputs), the condition for Ablation-CAM parity: elsewhere pytorch-grad-cam
    # ablates a channel to ``min - 1e7``, not to 0 as METHODS.md defines.
    layer, x = zoo_model.relu_layer, zoo_model.x[:1]
    assert float(layer_activation(zoo_model.reference, layer, x).min()) == 0.0
    # Both methods score every class in the same passes, so the engine explains all of
    # them at no extra cost; the reference, one pass per class, gets the most probable
    # class whose map is not empty.
    by_score = zoo_model.top_classes(x, NUM_CLASSES)[0]
    result = explain(zoo_model.model, method, x, targets=[by_score], layer=layer)
    sample = result.samples[0]
    assert sample.targets.tolist() == by_score
    assert sample.heatmaps is not None
    row = sample.empty.tolist().index(False)
    cam_class = ScoreCAM if method == "scorecam" else AblationCAM
    expected = reference_heatmaps(cam_class, zoo_model.reference, layer, x, [by_score[row]])
    assert bool(non_constant(expected).all()), "the reference map is empty"
    difference = max_difference(sample.heatmaps[row], expected[0])
    record_property("max_abs_diff", difference)
    assert difference <= TOLERANCE


def reference_pipeline(cam: np.ndarray[Any, Any], size: tuple[int, int]) -> torch.Tensor:
    """pytorch-grad-cam's heatmap pipeline (relu, minmax, resize, minmax) on CAMs ``(N, h, w)``."""
    height, width = size
    scaled = scale_cam_image(scale_cam_image(np.maximum(cam, 0), (width, height)))
    return torch.from_numpy(np.asarray(scaled, dtype=np.float32))


def test_eigencam_matches_pytorch_grad_cam_up_to_sign(
    zoo_model: ZooModel, record_property: RecordProperty
) -> None:
    x, layer = zoo_model.x, zoo_model.layer
    result = explain(zoo_model.model, "eigencam", x, targets=[[0], [1]], layer=layer)
    activation = layer_activation(zoo_model.reference, layer, x).numpy()
    projection = torch.from_numpy(get_2d_projection(activation))
    eigencam_maps = reference_heatmaps(EigenCAM, zoo_model.reference, layer, x, [0, 1])
    size = zoo_model.model.input_size
    # The pipeline below is pytorch-grad-cam's own: on the projection, it gives EigenCAM.
    assert max_difference(reference_pipeline(projection.numpy(), size), eigencam_maps) <= 1e-6
    raw_differences, heat_differences, signs = [], [], []
    for i, sample in enumerate(result.samples):
        assert sample.raw is not None
        assert sample.heatmaps is not None
        raw = sample.raw[0]
        assert float(raw.max()) >= float(-raw.min()), "the larger magnitude must be positive"
        # METHODS.md fixes the sign that pytorch-grad-cam leaves to the SVD routine:
        # where they differ, the reference is its pipeline on the negated projection.
        sign = 1.0 if float((raw * projection[i]).sum()) >= 0 else -1.0
        signed = sign * projection[i]
        raw_differences.append(max_difference(raw, signed) / float(signed.abs().max()))
        if sign > 0:
            expected = eigencam_maps[i]
        else:
            expected = reference_pipeline(signed[None].numpy(), size)[0]
        assert bool(non_constant(expected[None]).all()), "the reference map is empty"
        heat_differences.append(max_difference(sample.heatmaps[0], expected))
        signs.append(sign)
    record_property("max_abs_diff", max(heat_differences))
    record_property("max_rel_diff_raw", max(raw_differences))
    record_property("signs", signs)
    assert max(raw_differences) <= TOLERANCE
    assert max(heat_differences) <= TOLERANCE
