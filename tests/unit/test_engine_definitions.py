"""Methods that no library reproduces exactly, checked against their definitions.

SmoothGrad: the mean input gradient over seeded noisy copies (zero noise: the plain
gradient). Guided Grad-CAM: guided backprop times the Grad-CAM heatmap.
"""

from __future__ import annotations

import pytest
import torch
from engine_models import assert_close, images, leftover_hooks, tiny_resnet

from camserve_server.methods import explain
from camserve_server.methods.smoothgrad import sample_noise
from camserve_server.models import ExplainableModel

TARGETS = [[3, 7], [1, 0]]


@pytest.fixture(scope="module")
def model() -> ExplainableModel:
    return tiny_resnet()


def input_gradient(model: ExplainableModel, x: torch.Tensor, target: int) -> torch.Tensor:
    """``dy_target/dx`` for every row of ``x``, straight from autograd."""
    leaf = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        score = model.module(leaf)[:, target].sum()
        (grad,) = torch.autograd.grad(score, leaf)
    return grad


def smoothgrad(model: ExplainableModel, x: torch.Tensor, **options: float) -> list[torch.Tensor]:
    result = explain(model, "smoothgrad", x, targets=TARGETS, options=options)
    raws = [s.raw for s in result.samples]
    assert all(raw is not None for raw in raws)
    return [raw for raw in raws if raw is not None]


def test_smoothgrad_without_noise_is_the_plain_gradient(model: ExplainableModel) -> None:
    x = images(2)
    smooth = smoothgrad(model, x, noise=0.0, samples=3)
    saliency = explain(model, "saliency", x, targets=TARGETS)
    for i, row in enumerate(TARGETS):
        plain = torch.stack([input_gradient(model, x[i : i + 1], c)[0] for c in row])
        assert_close(smooth[i], plain, atol=1e-8, rel=1e-5)
        saliency_raw = saliency.samples[i].raw
        assert saliency_raw is not None
        assert_close(smooth[i].abs(), saliency_raw, atol=1e-8, rel=1e-5)


def test_smoothgrad_is_seeded(model: ExplainableModel) -> None:
    x = images(2, seed=1)
    first = smoothgrad(model, x, samples=3, seed=5)
    again = smoothgrad(model, x, samples=3, seed=5)
    other = smoothgrad(model, x, samples=3, seed=6)
    for a, b, c in zip(first, again, other, strict=True):
        assert torch.equal(a, b)
        assert float((a - c).abs().max()) > 1e-3 * float(a.abs().max())


def test_smoothgrad_is_the_mean_gradient_over_its_noisy_copies(model: ExplainableModel) -> None:
    x = images(2, seed=2)
    samples, level, seed = 4, 0.2, 11
    noise = sample_noise(x, samples, level, seed)
    assert noise.shape == (2, samples, *x.shape[1:])
    for i in range(2):
        sigma = level * float(x[i].max() - x[i].min())
        assert float(noise[i].std()) == pytest.approx(sigma, rel=0.05)
    smooth = smoothgrad(model, x, samples=samples, noise=level, seed=seed)
    for i, row in enumerate(TARGETS):
        noisy = x[i][None] + noise[i]
        expected = torch.stack([input_gradient(model, noisy, c).mean(dim=0) for c in row])
        assert_close(smooth[i], expected, atol=1e-8, rel=1e-5)
        plain = torch.stack([input_gradient(model, x[i : i + 1], c)[0] for c in row])
        assert float((smooth[i] - plain).abs().max()) > 1e-3 * float(plain.abs().max())


@pytest.mark.parametrize("layer", ["layer2", "layer1"])
def test_guided_gradcam_is_guided_backprop_times_the_gradcam_heatmap(
    model: ExplainableModel, layer: str
) -> None:
    x = images(2, seed=3)
    combined = explain(model, "guided_gradcam", x, targets=TARGETS, layer=layer)
    guided = explain(model, "guided_backprop", x, targets=TARGETS)
    gradcam = explain(model, "gradcam", x, targets=TARGETS, layer=layer)
    assert combined.layer == layer
    for c, g, cam in zip(combined.samples, guided.samples, gradcam.samples, strict=True):
        assert c.raw is not None and g.raw is not None and cam.heatmaps is not None
        assert torch.equal(c.targets, cam.targets)
        assert_close(c.raw, g.raw * cam.heatmaps[:, None], atol=1e-9, rel=1e-5)
    assert leftover_hooks(model.module) == []


def test_guided_gradcam_resolves_top_k_once(model: ExplainableModel) -> None:
    """With top-k targets, the guided part explains the same classes as the Grad-CAM part."""
    x = images(2, seed=4)
    combined = explain(model, "guided_gradcam", x, top_k=2)
    gradcam = explain(model, "gradcam", x, top_k=2)
    explicit = [s.targets.tolist() for s in gradcam.samples]
    guided = explain(model, "guided_backprop", x, targets=explicit)
    for c, g, cam in zip(combined.samples, guided.samples, gradcam.samples, strict=True):
        assert c.raw is not None and g.raw is not None and cam.heatmaps is not None
        assert c.targets.tolist() == cam.targets.tolist()
        assert_close(c.raw, g.raw * cam.heatmaps[:, None], atol=1e-9, rel=1e-5)
