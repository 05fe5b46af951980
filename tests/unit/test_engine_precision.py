"""Every method runs under bfloat16 autocast, within a stated tolerance of float32.

The tolerances are the largest difference measured on these inputs (the demo
model on demo images, a seeded random-weight ResNet-18 at 64x64) with about
2.5x margin; docs/methods.md, "Precision", gives the measured figures. Methods
that opt out of autocast run in float32 and must match it exactly.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision

from camserve_server.demo import INPUT_SIZE, load_demo_model, preprocess
from camserve_server.demo.data import make_dataset
from camserve_server.methods import METHODS, CachedLayer, explain
from camserve_server.models import ExplainableModel
from precision_tolerances import (
    FLOAT32_METHODS,
    HEATMAP_TOLERANCE,
    OPTIONS,
    RAW_RELATIVE_TOLERANCE,
)


@functools.cache
def _model_and_inputs(name: str) -> tuple[ExplainableModel, torch.Tensor]:
    if name == "demo":
        model = ExplainableModel(
            load_demo_model(), input_size=INPUT_SIZE, name="demo", channels_last=True
        )
        return model, torch.stack([preprocess(s.image) for s in make_dataset(4, 777)])
    torch.manual_seed(0)
    module = torchvision.models.resnet18(num_classes=10)
    model = ExplainableModel(module, input_size=(64, 64), name="r18", channels_last=True)
    return model, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_every_method_has_a_stated_tolerance() -> None:
    stated = set(HEATMAP_TOLERANCE) | set(RAW_RELATIVE_TOLERANCE) | FLOAT32_METHODS
    assert stated == set(METHODS)
    assert {m for m, method in METHODS.items() if not method.mixed_precision} == FLOAT32_METHODS


@pytest.mark.parametrize("model_name", ["demo", "resnet18"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_bfloat16_autocast_stays_within_tolerance_of_float32(model_name: str, method: str) -> None:
    model, x = _model_and_inputs(model_name)
    reference = explain(model, method, x, top_k=2, options=OPTIONS.get(method))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reduced = explain(model, method, x, top_k=2, options=OPTIONS.get(method))
    for ref, got in zip(reference.samples, reduced.samples, strict=True):
        assert got.logits.dtype == torch.float32
        assert torch.equal(ref.targets, got.targets)
        if method in RAW_RELATIVE_TOLERANCE:
            assert ref.raw is not None and got.raw is not None
            assert got.raw.dtype == torch.float32
            scale = float(ref.raw.abs().max().clamp_min(1e-12))
            difference = float((ref.raw - got.raw).abs().max()) / scale
            assert difference <= RAW_RELATIVE_TOLERANCE[method]
            continue
        assert ref.heatmaps is not None and got.heatmaps is not None
        assert got.heatmaps.dtype == torch.float32
        difference = float((ref.heatmaps - got.heatmaps).abs().max())
        assert difference <= HEATMAP_TOLERANCE.get(method, 1e-6), (method, difference)
    if reduced.activations is not None:
        assert reduced.activations.dtype == torch.float32  # what the cache stores


def test_cache_hit_under_autocast_matches_the_miss() -> None:
    model, x = _model_and_inputs("resnet18")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        miss = explain(model, "gradcam", x, targets=[1, 2])
        assert miss.activations is not None and miss.logits is not None
        cached = [CachedLayer(a, lg) for a, lg in zip(miss.activations, miss.logits, strict=True)]
        hit = explain(model, "gradcam", x, targets=[1, 2], cached=cached)
        ablation = explain(model, "ablationcam", x, targets=[1, 2], cached=cached)
    for a, b in zip(miss.samples, hit.samples, strict=True):
        assert a.heatmaps is not None and b.heatmaps is not None
        assert float((a.heatmaps - b.heatmaps).abs().max()) <= 1e-3
    reference = explain(model, "ablationcam", x, targets=[1, 2])
    for a, b in zip(reference.samples, ablation.samples, strict=True):
        assert a.heatmaps is not None and b.heatmaps is not None
        # a float32 Ablation-CAM on a bfloat16-computed activation: within Grad-CAM's tolerance
        assert float((a.heatmaps - b.heatmaps).abs().max()) <= 0.05
