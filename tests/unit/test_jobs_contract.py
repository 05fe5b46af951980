"""The job contract: registry, option validation with the valid range, determinism,
hooks released, and every method running through the same loop."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from demo_jobs import NORMALISATION, demo, job_request, start_job

from camserve_server.demo import INPUT_SIZE, preprocess
from camserve_server.demo.data import make_dataset
from camserve_server.errors import InvalidArgument
from camserve_server.jobs import JOB_METHODS, JobRequest, get_job_method
from camserve_server.jobs.running import run_job


@functools.cache
def image(index: int = 0) -> torch.Tensor:
    return preprocess(make_dataset(2, seed=11)[index].image)


SMALL: dict[str, dict[str, Any]] = {
    "activation_maximization": {"target": 1, "options": {"steps": 3}},
    "deepdream": {"image": "x", "options": {"steps": 3}},
    "feature_inversion": {"image": "x", "options": {"steps": 3}},
    "adversarial": {"image": "x", "options": {"steps": 3}},
    "fooling": {"target": 2, "options": {"steps": 3, "confidence": 1.0}},
    "texture_synthesis": {"image": "x", "options": {"steps": 3}},
    "style_transfer": {"image": "x", "style": "y", "options": {"steps": 3}},
}


def small_request(method: str, seed: int = 0) -> JobRequest:
    fields = dict(SMALL[method])
    if fields.get("image") == "x":
        fields["image"] = image(0)
    if fields.get("style") == "y":
        fields["style"] = image(1)
    fields["options"] = dict(fields["options"])
    return job_request(method, seed=seed, **fields)


def run_small(method: str, seed: int = 0) -> Any:
    job, _ = start_job(small_request(method, seed))
    return run_job(job)


def test_registry_lists_every_method_with_steps() -> None:
    assert set(JOB_METHODS) == set(SMALL)
    for method in JOB_METHODS.values():
        names = [spec.name for spec in method.options]
        assert "steps" in names and len(names) == len(set(names))
        assert method.summary and method.reference


def test_unknown_method_names_the_valid_ones() -> None:
    with pytest.raises(InvalidArgument, match="valid methods: activation_maximization"):
        get_job_method("dream")


@pytest.mark.parametrize("method", sorted(SMALL))
def test_every_method_steps_to_a_valid_outcome(method: str) -> None:
    outcome, events = run_small(method)
    assert [e.step for e in events] == list(range(1, len(events) + 1))
    assert events[-1].done and all(not e.done for e in events[:-1])
    assert len(outcome.trace) == len(events)
    assert outcome.tensor.dtype == torch.float32 and outcome.tensor.device.type == "cpu"
    assert outcome.tensor.shape == (3, *INPUT_SIZE)
    assert outcome.logits.shape == (demo().num_classes,)
    pixels = NORMALISATION.to_pixels(outcome.tensor)
    assert float(pixels.min()) >= -1e-5 and float(pixels.max()) <= 1 + 1e-5
    for extra in outcome.images.values():
        assert extra.shape[0] == 3 and extra.device.type == "cpu"
    module = demo().module
    assert all(not m._forward_hooks for m in module.modules()), "a hook was left behind"


@pytest.mark.parametrize("method", sorted(SMALL))
def test_same_seed_same_result(method: str) -> None:
    first, _ = run_small(method, seed=5)
    second, _ = run_small(method, seed=5)
    assert torch.equal(first.tensor, second.tensor)
    assert first.trace == second.trace


def test_different_seed_different_noise() -> None:
    first, _ = run_small("activation_maximization", seed=1)
    second, _ = run_small("activation_maximization", seed=2)
    assert not torch.equal(first.tensor, second.tensor)


def test_preview_is_the_current_image() -> None:
    job, _ = start_job(small_request("activation_maximization"))
    before = job.preview()
    job.step()
    assert before.shape == (3, *INPUT_SIZE) and not torch.equal(before, job.preview())


def invalid(method: str, match: str, **fields: Any) -> None:
    with pytest.raises(InvalidArgument, match=match):
        get_job_method(method).validate(demo(), job_request(method, **fields))


def test_unknown_layer_lists_the_valid_layers() -> None:
    invalid(
        "deepdream", r"unknown layer 'nope'.*valid layers: features", image=image(), layer="nope"
    )


def test_channel_out_of_range_gives_the_range() -> None:
    invalid(
        "activation_maximization",
        r"channel 64 is out of range .* 64 channels \(0\.\.63\)",
        layer="features.block3",
        channel=64,
    )
    invalid("activation_maximization", r"channel -1", layer="features.block3", channel=-1)


@pytest.mark.parametrize("epsilon", [0.0, -0.1, 1.5, "2/1"])
def test_epsilon_outside_zero_one(epsilon: Any) -> None:
    invalid("adversarial", r"epsilon", image=image(), options={"epsilon": epsilon})


def test_epsilon_accepts_a_fraction() -> None:
    checked = get_job_method("adversarial").validate(
        demo(), job_request("adversarial", image=image(), options={"epsilon": "8/255"})
    )
    assert checked.options["epsilon"] == pytest.approx(8 / 255)
    assert checked.options["step_size"] == pytest.approx(2 / 255)


@pytest.mark.parametrize(
    "method",
    ["deepdream", "feature_inversion", "adversarial", "texture_synthesis", "style_transfer"],
)
def test_missing_image(method: str) -> None:
    invalid(method, "needs an input image")


def test_style_transfer_needs_a_style_image() -> None:
    invalid("style_transfer", "needs a style image", image=image())


def test_target_out_of_range_and_missing() -> None:
    invalid("fooling", r"needs a target class in \[0, 5\]")
    invalid("activation_maximization", r"out of range.*\(0\.\.5\)", target=6)


def test_bad_options_name_the_range() -> None:
    invalid(
        "activation_maximization", r"steps must be in \[1, 10000\]", target=0, options={"steps": 0}
    )
    invalid(
        "activation_maximization",
        r"one of fourier, pixel",
        target=0,
        options={"parameterization": "x"},
    )
    invalid("deepdream", r"unknown option\(s\) octave", image=image(), options={"octave": 2})
    invalid(
        "activation_maximization",
        r"give either a target class or a channel",
        target=0,
        layer="features",
        channel=0,
    )


def test_validate_fills_every_default_without_touching_the_request() -> None:
    original = job_request("deepdream", image=image())
    checked = get_job_method("deepdream").validate(demo(), original)
    assert original.options == {} and checked.options["steps"] == 30
    assert checked.layer == demo().default_layer
