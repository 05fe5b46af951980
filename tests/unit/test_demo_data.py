"""The demo data generator is deterministic and its boxes are right; the shipped weights work."""

from __future__ import annotations

import numpy as np
import torch

from camserve_server.demo import (
    INPUT_SIZE,
    LABELS_PATH,
    SAMPLES_DIR,
    WEIGHTS_PATH,
    build_demo_model,
    load_demo_model,
    preprocess,
)
from camserve_server.demo.data import (
    CLASS_NAMES,
    IMAGE_SIZE,
    MAX_OBJECT,
    MIN_OBJECT,
    make_dataset,
    make_sample,
)

HELD_OUT_SEED = 4242  # neither the training nor the test seed of train.py


def test_the_generator_is_deterministic_for_a_seed() -> None:
    first, again = make_dataset(24, seed=7), make_dataset(24, seed=7)
    for a, b in zip(first, again, strict=True):
        assert a.label == b.label
        assert a.box == b.box
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
    other = make_dataset(24, seed=8)
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))


def test_samples_are_rgb_uint8_images_of_every_class() -> None:
    samples = make_dataset(60, seed=11)
    assert {s.label for s in samples} == set(range(len(CLASS_NAMES)))
    for s in samples:
        assert s.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert s.image.dtype == np.uint8
        assert s.mask.shape == (IMAGE_SIZE, IMAGE_SIZE)
        assert s.mask.dtype == np.bool_


def test_boxes_lie_in_the_image_and_hold_the_object() -> None:
    rng = np.random.default_rng(3)
    for _ in range(120):
        s = make_sample(rng)
        x0, y0, x1, y1 = s.box
        assert 0 <= x0 < x1 < IMAGE_SIZE
        assert 0 <= y0 < y1 < IMAGE_SIZE
        assert MIN_OBJECT <= x1 - x0 + 1 <= MAX_OBJECT
        assert x1 - x0 == y1 - y0
        inside = np.zeros_like(s.mask)
        inside[y0 : y1 + 1, x0 : x1 + 1] = True
        assert s.mask.sum() >= 30
        assert not (s.mask & ~inside).any()
        # The object is painted in one colour over the mask.
        colours = np.unique(s.image[s.mask], axis=0)
        assert len(colours) == 1


def test_objects_are_placed_all_over_the_image() -> None:
    boxes = np.array([s.box for s in make_dataset(300, seed=5)])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for axis in range(2):
        assert centres[:, axis].min() < IMAGE_SIZE * 0.3
        assert centres[:, axis].max() > IMAGE_SIZE * 0.7


def test_the_shipped_files_are_in_place() -> None:
    assert LABELS_PATH.read_text().split() == list(CLASS_NAMES)
    names = sorted(p.name for p in SAMPLES_DIR.glob("*.png"))
    assert names == [f"{i:02d}_{name}.png" for i, name in enumerate(CLASS_NAMES)]
    assert WEIGHTS_PATH.stat().st_size < 2_000_000


def test_preprocess_gives_normalised_float_chw() -> None:
    image = make_dataset(1, seed=0)[0].image
    x = preprocess(image)
    assert x.shape == (3, *INPUT_SIZE)
    assert x.dtype == torch.float32
    assert -5 < float(x.min()) < float(x.max()) < 5


def test_the_weights_load_safely_and_classify_held_out_images() -> None:
    state = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    build_demo_model(len(CLASS_NAMES)).load_state_dict(state)
    model = load_demo_model()
    assert not model.training
    samples = make_dataset(300, HELD_OUT_SEED)
    x = torch.stack([preprocess(s.image) for s in samples])
    labels = torch.tensor([s.label for s in samples])
    with torch.inference_mode():
        predicted = model(x).argmax(dim=1)
    assert float((predicted == labels).float().mean()) >= 0.9
