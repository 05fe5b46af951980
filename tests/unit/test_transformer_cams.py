"""Vision transformers: token layers read as patch grids, parity of the CAM family with
pytorch-grad-cam's ``reshape_transform`` recipe, and the default layer.

Models: torchvision ViT, timm ViT, timm DeiT distilled (two prefix tokens), timm
and torchvision Swin (channels-last blocks), tiny and seeded
(``transformer_models``). Heatmaps must agree with the reference to 1e-4 (max
abs) at the default layer, as ``test_cam_parity`` compares them on CNNs; Eigen-CAM
up to the sign of its projection (docs/methods.md). Every comparison asserts
that the reference maps are not constant, so none passes vacuously.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from parity_rows import GRADIENT_CAMS, TARGETS_PER_IMAGE, TOLERANCE
from pytorch_grad_cam import (
    EigenCAM,
    ScoreCAM,
)
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from transformer_parity import (
    RECIPES,
    max_difference,
    non_constant,
    reference_heatmaps,
    reshaped_activation,
)

from camserve_server.methods import explain
from transformer_models import DEFAULT_LAYERS, FACTORIES, TransformerCase, build_case

RecordProperty = Callable[[str, object], None]


@pytest.fixture(scope="module", params=list(FACTORIES))
def case(request: pytest.FixtureRequest) -> TransformerCase:
    """Each tiny transformer in turn, built once per module."""
    name: str = request.param
    return build_case(name)


def engine_heatmaps(
    case: TransformerCase, method: str, x: torch.Tensor, targets: list[list[int]]
) -> torch.Tensor:
    """The engine's heatmaps at the default layer, one row per (sample, target)."""
    result = explain(case.model, method, x, targets=targets)
    assert result.layer == DEFAULT_LAYERS[case.name]
    rows = []
    for sample, classes in zip(result.samples, targets, strict=True):
        assert sample.targets.tolist() == classes and sample.heatmaps is not None
        rows.append(sample.heatmaps)
    return torch.cat(rows)


@pytest.mark.parametrize("method", list(GRADIENT_CAMS))
def test_gradient_cams_match_pytorch_grad_cam_with_its_reshape_recipe(
    case: TransformerCase, method: str, record_property: RecordProperty
) -> None:
    targets = case.top_classes(TARGETS_PER_IMAGE)
    actual = engine_heatmaps(case, method, case.x, targets)
    expected = reference_heatmaps(
        GRADIENT_CAMS[method],
        case.reference,
        DEFAULT_LAYERS[case.name],
        RECIPES[case.name],
        case.x.repeat_interleave(TARGETS_PER_IMAGE, dim=0),
        [c for classes in targets for c in classes],
    )
    assert int(non_constant(expected).sum()) >= 3, "too few non-empty reference maps to compare"
    difference = max_difference(actual, expected)
    record_property("max_abs_diff", difference)
    assert difference <= TOLERANCE


def test_scorecam_matches_pytorch_grad_cam_with_its_reshape_recipe(
    case: TransformerCase, record_property: RecordProperty
) -> None:
    x = case.x[:1]
    by_score = case.top_classes(1)[0][:1]
    actual = engine_heatmaps(case, "scorecam", x, [by_score])
    expected = reference_heatmaps(
        ScoreCAM, case.reference, DEFAULT_LAYERS[case.name], RECIPES[case.name], x, by_score
    )
    assert bool(non_constant(expected).all()), "the reference map is empty"
    difference = max_difference(actual, expected)
    record_property("max_abs_diff", difference)
    assert difference <= TOLERANCE


def test_eigencam_matches_pytorch_grad_cam_up_to_sign(
    case: TransformerCase, record_property: RecordProperty
) -> None:
    layer, reshape = DEFAULT_LAYERS[case.name], RECIPES[case.name]
    result = explain(case.model, "eigencam", case.x, targets=[[0], [1]])
    projection = torch.from_numpy(
        get_2d_projection(reshaped_activation(case.reference, layer, reshape, case.x).numpy())
    )
    expected_maps = reference_heatmaps(EigenCAM, case.reference, layer, reshape, case.x, [0, 1])
    differences = []
    for i, sample in enumerate(result.samples):
        assert sample.raw is not None and sample.heatmaps is not None
        raw = sample.raw[0]
        # The sign docs/methods.md fixes; where it differs from the SVD routine's, the
        # reference is pytorch-grad-cam's pipeline on the negated projection.
        if float((raw * projection[i]).sum()) >= 0:
            expected = expected_maps[i]
        else:
            negated = torch.clamp(-projection[i], min=0)[None].numpy()
            height, width = case.model.input_size
            expected = torch.from_numpy(scale_cam_image(scale_cam_image(negated, (width, height))))[
                0
            ].float()
        assert bool(non_constant(expected[None]).all()), "the reference map is empty"
        differences.append(max_difference(sample.heatmaps[0], expected))
    record_property("max_abs_diff", max(differences))
    assert max(differences) <= TOLERANCE


def test_the_default_layer_is_the_last_blocks_first_norm(case: TransformerCase) -> None:
    model = case.model
    assert model.default_layer == DEFAULT_LAYERS[case.name]
    assert model.default_layer in model.structure.spatial_layers()
    grid = model.structure.grid(model.default_layer)
    assert grid is not None and grid.is_token_layer
    assert (grid.height, grid.width) == (4, 4)
