"""Evidence for the optimisation visualisations on the demo model (small step counts).

Class and channel visualisations (Simonyan et al. 2014; Olah et al. 2017), DeepDream,
feature inversion, texture synthesis and style transfer: each test checks the quantity
the method optimises moved as the method promises, measured afresh on the result.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from demo_jobs import NORMALISATION, demo, job_request, start_job

from camserve_server.demo import preprocess
from camserve_server.demo.data import make_dataset
from camserve_server.jobs import Job, JobOutcome, JobRequest, StepEvent
from camserve_server.jobs.regularisers import gram_matrix
from camserve_server.jobs.running import run_job
from camserve_server.models.capture import forward_capture


@functools.cache
def images() -> list[tuple[torch.Tensor, int]]:
    return [(preprocess(s.image), s.label) for s in make_dataset(6, seed=2024)]


def start(method: str, **fields: Any) -> tuple[Job, JobRequest]:
    return start_job(job_request(method, **fields))


def run(method: str, **fields: Any) -> tuple[JobOutcome, list[StepEvent]]:
    job, _ = start(method, **fields)
    return run_job(job)


def layer_output(x: torch.Tensor, layer: str) -> torch.Tensor:
    with torch.no_grad():
        return forward_capture(demo(), x[None], [layer], logits=False).layers[layer][0]


@pytest.mark.parametrize("parameterization", ["fourier", "pixel"])
def test_class_visualisation_is_classified_as_its_class(parameterization: str) -> None:
    for target in range(demo().num_classes):
        outcome, events = run(
            "activation_maximization",
            target=target,
            options={"steps": 24, "parameterization": parameterization},
        )
        probability = float(outcome.logits.softmax(0)[target])
        assert probability >= 0.9, (target, probability)
        assert len(events) == 24 and events[-1].done
        pixels = NORMALISATION.to_pixels(outcome.tensor)
        assert float(pixels.min()) >= -1e-5 and float(pixels.max()) <= 1 + 1e-5


@pytest.mark.parametrize(
    ("layer", "parameterization", "lr", "steps"),
    [
        ("features.block2", "pixel", 0.05, 32),
        ("features.block3", "pixel", 0.05, 32),
        ("features.block3", "fourier", 0.1, 48),
    ],
)
def test_channel_visualisation_raises_the_channel_tenfold(
    layer: str, parameterization: str, lr: float, steps: int
) -> None:
    options = {"steps": steps, "lr": lr, "parameterization": parameterization}
    for channel in range(4):
        job, _ = start("activation_maximization", layer=layer, channel=channel, options=options)
        on_noise = float(layer_output(job.preview(), layer)[channel].mean())
        outcome, _ = run_job(job)
        after = float(layer_output(outcome.tensor, layer)[channel].mean())
        assert on_noise > 0.0
        assert after >= 10.0 * on_noise, (channel, on_noise, after)


def test_deepdream_raises_the_layer_activation_norm() -> None:
    image, _ = images()[0]
    layer = "features.block2"
    outcome, events = run("deepdream", image=image, layer=layer, options={"steps": 12})
    before = float(layer_output(image, layer).norm())
    after = float(layer_output(outcome.tensor, layer).norm())
    assert after > 1.5 * before, (before, after)
    assert [e.step for e in events] == list(range(1, 13))
    assert outcome.tensor.shape == image.shape


def test_feature_inversion_matches_the_features_and_keeps_the_class() -> None:
    layer = "features.block1.4"  # deeper, post-ReLU layers plateau higher (dead units)
    for image, label in images():
        job, _ = start("feature_inversion", image=image, layer=layer, options={"steps": 300})
        reference = layer_output(image, layer)
        on_noise = float((layer_output(job.preview(), layer) - reference).norm())
        outcome, _ = run_job(job)
        after = float((layer_output(outcome.tensor, layer) - reference).norm())
        assert after <= 0.1 * on_noise, (on_noise, after)
        assert int(outcome.logits.argmax()) == label


def gram_distance(x: torch.Tensor, exemplar: torch.Tensor, layers: list[str]) -> float:
    with torch.no_grad():
        ours = forward_capture(demo(), x[None], layers, logits=False).layers
        theirs = forward_capture(demo(), exemplar[None], layers, logits=False).layers
    return sum(float((gram_matrix(ours[n]) - gram_matrix(theirs[n])).pow(2).sum()) for n in layers)


def test_texture_synthesis_lowers_the_gram_loss() -> None:
    exemplar, _ = images()[2]
    job, checked = start("texture_synthesis", image=exemplar, options={"steps": 40})
    layers = str(checked.options["layers"]).split(",")
    assert 1 <= len(layers) <= 5
    on_noise = gram_distance(job.preview(), exemplar, layers)
    outcome, events = run_job(job)
    assert gram_distance(outcome.tensor, exemplar, layers) < 0.2 * on_noise
    assert events[-1].objective < events[0].objective


def test_style_transfer_lowers_the_gram_loss() -> None:
    (content, _), (style, _) = images()[3], images()[4]
    job, checked = start("style_transfer", image=content, style=style, options={"steps": 40})
    layers = str(checked.options["layers"]).split(",")
    before = gram_distance(content, style, layers)
    outcome, _ = run_job(job)
    assert gram_distance(outcome.tensor, style, layers) < before
    assert set(outcome.images) == {"content", "style"}
