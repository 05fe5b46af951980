"""Adversarial examples (FGSM, PGD) and fooling images on held-out demo images.

The budget is in 0..1 pixel units whatever the model's normalisation (the demo's std is
0.25, so one pixel unit is four normalised units): every check converts back to pixels.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from demo_jobs import NORMALISATION, demo, job_request, start_job

from camserve_server.demo import preprocess
from camserve_server.demo.data import make_dataset
from camserve_server.demo.train import TEST_SEED
from camserve_server.jobs import JobOutcome, StepEvent
from camserve_server.jobs.running import run_job

EPSILON = 8.0 / 255.0
TOLERANCE = 1e-5  # float32 round trip through the normalisation


@functools.cache
def held_out() -> list[tuple[torch.Tensor, int]]:
    """The demo's held-out test images that it classifies right."""
    samples = [(preprocess(s.image), s.label) for s in make_dataset(36, seed=TEST_SEED)]
    with torch.no_grad():
        predicted = demo().module(torch.stack([x for x, _ in samples])).argmax(1)
    return [sample for sample, p in zip(samples, predicted.tolist(), strict=True) if p == sample[1]]


def attack(image: torch.Tensor | None, **fields: Any) -> tuple[JobOutcome, list[StepEvent]]:
    job, _ = start_job(job_request(fields.pop("method", "adversarial"), image=image, **fields))
    return run_job(job)


def linf_in_pixels(outcome: JobOutcome) -> float:
    adversarial = NORMALISATION.to_pixels(outcome.tensor)
    original = NORMALISATION.to_pixels(outcome.images["original"])
    return float((adversarial - original).abs().max())


def test_held_out_set_is_large_enough() -> None:
    assert len(held_out()) >= 30


def test_fgsm_flips_most_predictions_within_epsilon() -> None:
    flipped = 0
    for image, label in held_out():
        outcome, events = attack(image, options={"attack": "fgsm"})
        assert len(events) == 1
        assert linf_in_pixels(outcome) <= EPSILON + TOLERANCE
        assert int(outcome.extra_logits["original"].argmax()) == label
        flipped += int(outcome.logits.argmax()) != label
    assert flipped / len(held_out()) > 0.5, flipped


def test_targeted_pgd_reaches_the_target_within_epsilon() -> None:
    reached = 0
    for index, (image, label) in enumerate(held_out()):
        target = (label + 1 + index % 5) % 6
        outcome, events = attack(image, target=target, seed=index)
        assert len(events) == 10
        assert linf_in_pixels(outcome) <= EPSILON + TOLERANCE
        pixels = NORMALISATION.to_pixels(outcome.tensor)
        assert float(pixels.min()) >= -TOLERANCE and float(pixels.max()) <= 1 + TOLERANCE
        reached += int(outcome.logits.argmax()) == target
    assert reached / len(held_out()) >= 0.9, reached


def test_perturbation_image_is_amplified_for_display() -> None:
    image, _ = held_out()[0]
    outcome, _ = attack(image, options={"attack": "fgsm", "epsilon": "4/255"})
    shown = NORMALISATION.to_pixels(outcome.images["perturbation"])
    # FGSM moves every pixel by +-epsilon unless clamped: shown as 0 or 1 (0.5 is none).
    assert float(shown.min()) >= -TOLERANCE and float(shown.max()) <= 1 + TOLERANCE
    assert float(((shown - 0.5).abs() > 0.49).float().mean()) > 0.5


@pytest.mark.parametrize("from_image", [False, True])
def test_fooling_reaches_the_confidence_and_stops_early(from_image: bool) -> None:
    image = held_out()[0][0] if from_image else None
    target = (held_out()[0][1] + 2) % 6
    outcome, events = attack(
        image,
        method="fooling",
        target=target,
        options={"confidence": 0.95, "steps": 200},
    )
    probability = float(outcome.logits.softmax(0)[target])
    assert probability >= 0.95
    assert events[-1].done and len(events) < 200
    assert events[-1].objective == pytest.approx(probability, abs=1e-4)
