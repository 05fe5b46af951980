"""The demo model's explanations are meaningful: they point at the object."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camserve_server.demo import INPUT_SIZE, LABELS_PATH, load_demo_model, preprocess
from camserve_server.demo.data import CLASS_NAMES, Sample, make_dataset
from camserve_server.methods import explain
from camserve_server.models import ExplainableModel

HELD_OUT_SEED = 12345  # neither the training nor the test seed of train.py


@pytest.fixture(scope="module")
def model() -> ExplainableModel:
    return ExplainableModel(load_demo_model(), input_size=INPUT_SIZE, name="demo")


@pytest.fixture(scope="module")
def held_out() -> list[Sample]:
    return make_dataset(240, HELD_OUT_SEED)


def _batch(samples: list[Sample]) -> torch.Tensor:
    return torch.stack([preprocess(s.image) for s in samples])


def _hit_rate(model: ExplainableModel, samples: list[Sample], method: str, **options: int) -> float:
    """Share of images whose heatmap peak lies inside the object's box (the pointing game)."""
    hits = 0
    for start in range(0, len(samples), 40):
        chunk = samples[start : start + 40]
        result = explain(
            model, method, _batch(chunk), targets=[s.label for s in chunk], options=options or None
        )
        for sample, explained in zip(chunk, result.samples, strict=True):
            assert explained.heatmaps is not None
            heat = explained.heatmaps[0].cpu().numpy()
            y, x = np.unravel_index(int(heat.argmax()), heat.shape)
            x0, y0, x1, y1 = sample.box
            hits += int(x0 <= x <= x1 and y0 <= y <= y1)
    return hits / len(samples)


def _chance(samples: list[Sample]) -> float:
    """The hit rate of a random point: the mean share of the image the box covers."""
    side = INPUT_SIZE[0] * INPUT_SIZE[1]
    return float(
        np.mean([(s.box[2] - s.box[0] + 1) * (s.box[3] - s.box[1] + 1) / side for s in samples])
    )


def test_labels_match_the_classes() -> None:
    assert LABELS_PATH.read_text().split() == list(CLASS_NAMES)


def test_demo_model_classifies_held_out_images(
    model: ExplainableModel, held_out: list[Sample]
) -> None:
    with torch.inference_mode():
        predicted = model.module(_batch(held_out)).argmax(dim=1)
    labels = torch.tensor([s.label for s in held_out])
    assert float((predicted == labels).float().mean()) >= 0.9


def test_gradcam_points_at_the_object(model: ExplainableModel, held_out: list[Sample]) -> None:
    assert _hit_rate(model, held_out, "gradcam") >= 0.9


@pytest.mark.parametrize(
    ("method", "options"), [("saliency", {}), ("occlusion", {"window": 12, "stride": 4})]
)
def test_saliency_and_occlusion_do_far_better_than_chance(
    model: ExplainableModel, held_out: list[Sample], method: str, options: dict[str, int]
) -> None:
    rate = _hit_rate(model, held_out[:120], method, **options)
    assert rate >= max(0.6, 3 * _chance(held_out))
