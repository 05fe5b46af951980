"""timm's CNNs explained as pytorch-grad-cam explains them: the gradient CAMs to 1e-4.

ConvNeXt, EfficientNet and RegNet at 64x64 with seeded random weights (nothing is
downloaded), each at its last stage before global pooling, as camserve serves a
``timm:<name>`` model.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
from parity_rows import (
    GRADIENT_CAMS,
    TARGETS_PER_IMAGE,
    TOLERANCE,
    engine_rows,
    max_difference,
    non_constant,
    reference_heatmaps,
)

from zoo import NUM_CLASSES, ZooModel, zoo_model_of

# timm model -> (its last stage before global pooling, an early stage). EfficientNet's is
# read after its last norm and SiLU: before them (conv_head) channel sums near zero make
# XGrad-CAM's division ill-conditioned in both implementations alike.
TIMM_LAYERS: dict[str, tuple[str, str]] = {
    "convnext_atto": ("stages.3", "stages.0"),
    "efficientnet_b0": ("bn2", "blocks.1"),
    "regnetx_002": ("s4", "s1"),
}

RecordProperty = Callable[[str, object], None]


@pytest.fixture(scope="module", params=list(TIMM_LAYERS))
def timm_model(request: pytest.FixtureRequest) -> ZooModel:
    name: str = request.param
    torch.manual_seed(0)
    module = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES)
    layer, early = TIMM_LAYERS[name]
    return zoo_model_of(name, module, layer, early, seed=0)


@pytest.mark.parametrize("method", list(GRADIENT_CAMS))
def test_timm_cnn_gradient_cams_match_pytorch_grad_cam(
    timm_model: ZooModel, method: str, record_property: RecordProperty
) -> None:
    targets = timm_model.top_classes(timm_model.x, TARGETS_PER_IMAGE)
    actual = engine_rows(
        timm_model, method, timm_model.x, targets, "heatmaps", layer=timm_model.layer
    )
    expected = reference_heatmaps(
        GRADIENT_CAMS[method],
        timm_model.reference,
        timm_model.layer,
        timm_model.x.repeat_interleave(TARGETS_PER_IMAGE, dim=0),
        [c for classes in targets for c in classes],
    )
    assert int(non_constant(expected).sum()) >= 3, "too few non-empty reference maps to compare"
    difference = max_difference(actual, expected)
    record_property("max_abs_diff", difference)
    assert difference <= TOLERANCE
