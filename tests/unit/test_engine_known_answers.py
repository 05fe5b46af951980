"""Known answers without any reference library: a network whose maps have a closed form.

``LinearCamNet`` is ``x -> conv1x1 (V, b) -> A -> global average pool -> linear (W, c)``.
The score is linear in ``A`` and in ``x``, so for target class ``c`` on an
``h x w`` input (the conv keeps the size):

* ``dy_c/dA_k = W[c, k] / (h w)`` at every position;
* Grad-CAM: ``cam = sum_k W[c, k] / (h w) A_k``; CAM: ``cam = sum_k W[c, k] A_k``;
* ``dy_c/dx`` is the constant ``(W V)[c] / (h w)`` per colour channel;
* occluding a window lowers ``y_c`` by ``sum over the window of (W V)[c] (x - fill) / (h w)``.

Expected values are computed here in float64, from the definitions in the method notes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from engine_models import LinearCamNet, assert_close, leftover_hooks

from camserve_server.methods import MethodNotApplicable, explain
from camserve_server.models import ExplainableModel

SIZE = 12
V = torch.tensor(
    [[0.5, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.1, 0.7], [0.2, 0.4, 0.2]], dtype=torch.float64
)
V_BIAS = torch.tensor([0.1, 0.2, 0.05, 0.3], dtype=torch.float64)
W = torch.tensor(
    [
        [1.0, -0.5, 0.8, 0.3],
        [-1.0, -0.7, -0.2, -0.4],  # every weight negative: empty maps on positive activations
        [0.3, 0.9, -0.6, 0.2],
    ],
    dtype=torch.float64,
)
W_BIAS = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
ALL_NEGATIVE = 1
TARGETS = [[0, 2], [2, 0]]


@pytest.fixture(scope="module")
def model() -> ExplainableModel:
    net = LinearCamNet(V.float(), V_BIAS.float(), W.float(), W_BIAS.float())
    return ExplainableModel(net, input_size=(SIZE, SIZE), name="linear_cam")


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, SIZE, SIZE, generator=generator) * 0.5 + 0.3


def activation(x: torch.Tensor) -> torch.Tensor:
    """``A = conv1x1(x)`` in float64, ``(N, K, h, w)``."""
    return torch.einsum("kc,nchw->nkhw", V, x.double()) + V_BIAS[None, :, None, None]


def effective_weight() -> torch.Tensor:
    """``(W V)`` ``(C, 3)``: the score's weight on each colour channel, summed over space."""
    return W @ V


def minmax(values: torch.Tensor) -> torch.Tensor:
    shifted = values - values.min()
    return shifted / (shifted.max() + 1e-7)


def expected_heatmap(cam: torch.Tensor) -> torch.Tensor:
    """The CAM heatmap pipeline at feature size equal to input size (the resize is exact)."""
    return minmax(minmax(torch.relu(cam)))


def expected_cams(x: torch.Tensor, weights: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """``sum_k weights[i][t][k] A_k`` for every sample ``i`` and its targets ``t``."""
    a = activation(x)
    return [
        torch.stack([torch.einsum("k,khw->hw", w, a[i]) for w in row])
        for i, row in enumerate(weights)
    ]


HW = SIZE * SIZE


def gradcam_weights(c: int, a: torch.Tensor) -> torch.Tensor:
    del a
    return W[c] / HW


def xgradcam_weights(c: int, a: torch.Tensor) -> torch.Tensor:
    total = a.sum(dim=(1, 2))
    return W[c] / HW * total / (total + 1e-7)


def gradcam_plus_plus_weights(c: int, a: torch.Tensor) -> torch.Tensor:
    g = W[c] / HW
    alpha = g**2 / (2 * g**2 + a.sum(dim=(1, 2)) * g**3 + 1e-6)
    return HW * torch.relu(g) * torch.where(g != 0, alpha, torch.zeros_like(alpha))


def layercam_weights(c: int, a: torch.Tensor) -> torch.Tensor:
    del a
    return torch.relu(W[c]) / HW


def cam_weights(c: int, a: torch.Tensor) -> torch.Tensor:
    del a
    return W[c]


CHANNEL_WEIGHTS: dict[str, Callable[[int, torch.Tensor], torch.Tensor]] = {
    "gradcam": gradcam_weights,
    "hirescam": gradcam_weights,  # g_k is constant in space, so g_k * A_k sums to w_k A_k
    "xgradcam": xgradcam_weights,
    "gradcam++": gradcam_plus_plus_weights,
    "layercam": layercam_weights,
    "cam": cam_weights,
}


@pytest.mark.parametrize("method", sorted(CHANNEL_WEIGHTS))
def test_cam_family_matches_its_closed_form(
    model: ExplainableModel, x: torch.Tensor, method: str
) -> None:
    result = explain(model, method, x, targets=TARGETS, layer="conv")
    a = activation(x)
    weights = [[CHANNEL_WEIGHTS[method](c, a[i]) for c in row] for i, row in enumerate(TARGETS)]
    for sample, cams, row in zip(result.samples, expected_cams(x, weights), TARGETS, strict=True):
        assert sample.targets.tolist() == row
        assert sample.raw is not None and sample.heatmaps is not None
        assert_close(sample.raw, cams, atol=1e-6, rel=1e-5)
        for heat, cam in zip(sample.heatmaps, cams, strict=True):
            assert_close(heat, expected_heatmap(cam), atol=1e-5)
    assert result.layer == "conv"
    assert leftover_hooks(model.module) == []


def test_default_layer_is_the_pooled_feature_map(model: ExplainableModel) -> None:
    assert model.default_layer == "conv"


def test_cam_is_gradcam_times_the_pooled_area(model: ExplainableModel, x: torch.Tensor) -> None:
    """On a GAP + linear model, CAM and Grad-CAM are the same map up to ``h w``."""
    cam = explain(model, "cam", x, targets=TARGETS)
    gradcam = explain(model, "gradcam", x, targets=TARGETS)
    for c, g in zip(cam.samples, gradcam.samples, strict=True):
        assert c.raw is not None and g.raw is not None
        assert c.heatmaps is not None and g.heatmaps is not None
        assert_close(c.raw, g.raw * HW, rel=1e-5)
        assert_close(c.heatmaps, g.heatmaps, atol=1e-5)


def test_saliency_of_a_linear_model_is_its_absolute_weight(
    model: ExplainableModel, x: torch.Tensor
) -> None:
    result = explain(model, "saliency", x, targets=TARGETS)
    for sample, row in zip(result.samples, TARGETS, strict=True):
        expected = effective_weight()[row].abs() / HW  # (T, 3)
        assert sample.raw is not None
        assert_close(sample.raw, expected[:, :, None, None].expand(-1, -1, SIZE, SIZE), rel=1e-5)


def test_input_x_gradient_of_a_linear_model(model: ExplainableModel, x: torch.Tensor) -> None:
    result = explain(model, "input_x_gradient", x, targets=TARGETS)
    for i, (sample, row) in enumerate(zip(result.samples, TARGETS, strict=True)):
        expected = x[i].double()[None] * (effective_weight()[row] / HW)[:, :, None, None]
        assert sample.raw is not None
        assert_close(sample.raw, expected, atol=1e-7, rel=1e-5)


def test_integrated_gradients_of_a_linear_model_is_exact(
    model: ExplainableModel, x: torch.Tensor
) -> None:
    """The gradient is the same along the whole path, so even three steps are exact."""
    result = explain(model, "integrated_gradients", x, targets=TARGETS, options={"steps": 3})
    for i, (sample, row) in enumerate(zip(result.samples, TARGETS, strict=True)):
        expected = x[i].double()[None] * (effective_weight()[row] / HW)[:, :, None, None]
        assert sample.raw is not None
        assert_close(sample.raw, expected, atol=1e-7, rel=1e-5)
        assert float(sample.metrics["completeness_gap"].abs().max()) < 1e-5


def window_starts(size: int, window: int, stride: int) -> list[int]:
    count = math.ceil(max(size - window, 0) / stride) + 1
    return [i * stride for i in range(count)]


def expected_occlusion(
    x: torch.Tensor, c: int, window: int, stride: int, fill: float
) -> torch.Tensor:
    """Mean, over the windows covering each pixel, of the closed-form score drop."""
    weight = effective_weight()[c] / HW  # (3,)
    per_pixel = torch.einsum("c,chw->hw", weight, x.double() - fill)
    total = torch.zeros(SIZE, SIZE, dtype=torch.float64)
    covering = torch.zeros(SIZE, SIZE, dtype=torch.float64)
    for top in window_starts(SIZE, window, stride):
        for left in window_starts(SIZE, window, stride):
            box = (slice(top, top + window), slice(left, left + window))
            total[box] += per_pixel[box].sum()
            covering[box] += 1
    assert bool((covering > 0).all())
    return (total / covering)[None].expand(3, -1, -1)


@pytest.mark.parametrize(("window", "stride", "fill"), [(5, 3, 0.0), (4, 4, 0.5), (1, 1, -0.25)])
def test_occlusion_of_a_linear_model_matches_its_closed_form(
    model: ExplainableModel, x: torch.Tensor, window: int, stride: int, fill: float
) -> None:
    options = {"window": window, "stride": stride, "fill": fill}
    result = explain(model, "occlusion", x, targets=TARGETS, options=options)
    for i, (sample, row) in enumerate(zip(result.samples, TARGETS, strict=True)):
        expected = torch.stack([expected_occlusion(x[i], c, window, stride, fill) for c in row])
        assert sample.raw is not None
        assert_close(sample.raw, expected, atol=1e-6, rel=1e-5)


def test_window_positions_clip_the_last_window_at_the_border() -> None:
    """Windows of 5 every 3 px on 12 px: starts 0, 3, 6, 9; the last covers only 9..11."""
    assert window_starts(SIZE, 5, 3) == [0, 3, 6, 9]


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "cam", "layercam"])
def test_a_class_nothing_supports_gives_an_empty_map(model: ExplainableModel, method: str) -> None:
    """Positive activations and only negative weights for the class: nothing survives the ReLU.

    The map is reported empty and all zeros, while another class in the same request
    gets a normal map.
    """
    positive = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    assert bool((activation(positive) > 0).all())
    result = explain(model, method, positive, targets=[[ALL_NEGATIVE, 0]])
    sample = result.samples[0]
    assert sample.heatmaps is not None and sample.raw is not None
    assert sample.empty.tolist() == [True, False]
    assert bool((sample.heatmaps[0] == 0).all())
    assert float(sample.heatmaps[1].max()) == pytest.approx(1.0, abs=1e-5)
    assert bool((sample.raw[0] <= 0).all())


def test_a_class_with_no_gradient_gives_an_empty_saliency_map() -> None:
    """A class whose weights are all zero has a zero gradient: an empty, all-zero map."""
    fc = W.clone()
    fc[ALL_NEGATIVE] = 0
    net = LinearCamNet(V.float(), V_BIAS.float(), fc.float(), W_BIAS.float())
    zero_class = ExplainableModel(net, input_size=(SIZE, SIZE))
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    sample = explain(zero_class, "saliency", x, targets=[[ALL_NEGATIVE, 2]]).samples[0]
    assert sample.heatmaps is not None
    assert sample.empty.tolist() == [True, False]
    assert bool((sample.heatmaps[0] == 0).all())


def test_guided_methods_refuse_a_model_without_relu(
    model: ExplainableModel, x: torch.Tensor
) -> None:
    for method in ("guided_backprop", "deconvnet", "guided_gradcam"):
        with pytest.raises(MethodNotApplicable, match="saliency"):
            explain(model, method, x, targets=TARGETS)
        assert leftover_hooks(model.module) == []
