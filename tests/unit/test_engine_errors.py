"""Bad requests get a clear ``InvalidArgument`` naming the valid choices, and every hook
and patched ReLU is released afterwards, whether the call failed early or mid-run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from engine_models import NUM_CLASSES, SMALL_OPTIONS, images, leftover_hooks, tiny_resnet
from torch import nn

from camserve_server.errors import InvalidArgument
from camserve_server.methods import (
    METHODS,
    MethodNotApplicable,
    TargetRequest,
    explain,
)
from camserve_server.models import ExplainableModel

ALL = sorted(METHODS)
WITH_TARGETS = sorted(m for m, method in METHODS.items() if method.uses_targets)
WITH_LAYER = sorted(m for m, method in METHODS.items() if method.uses_layer)
# Methods that read the model's layer (not a convolution's weights, not the pooled input).
AT_A_BLOCK = sorted(
    m for m, method in METHODS.items() if method.uses_layer and not method.own_default_layer
)


@pytest.fixture(scope="module")
def model() -> ExplainableModel:
    return tiny_resnet()


@pytest.fixture(autouse=True)
def _no_hooks_left(model: ExplainableModel) -> Iterator[None]:
    """After every test here, failed call or not, nothing stays attached to the model."""
    yield
    assert leftover_hooks(model.module) == []
    assert all("forward" not in vars(m) for m in model.module.modules() if isinstance(m, nn.ReLU))


def call(model: ExplainableModel, method: str, **kwargs: Any) -> None:
    kwargs.setdefault("options", SMALL_OPTIONS.get(method))
    x = kwargs.pop("x", images(2))
    explain(model, method, x, **kwargs)


def test_unknown_method_names_the_valid_ones(model: ExplainableModel) -> None:
    with pytest.raises(InvalidArgument, match="unknown method 'gradcamm'") as raised:
        call(model, "gradcamm")
    for method in METHODS:
        assert method in str(raised.value)


@pytest.mark.parametrize("method", WITH_LAYER)
def test_unknown_layer_names_the_valid_layers(model: ExplainableModel, method: str) -> None:
    with pytest.raises(InvalidArgument, match="unknown layer 'layer9'") as raised:
        call(model, method, targets=[[0], [1]], layer="layer9")
    assert "layer1" in str(raised.value) and "layer2" in str(raised.value)


@pytest.mark.parametrize("method", [m for m in AT_A_BLOCK if m != "embedding"])
def test_a_layer_without_a_feature_map_is_refused(model: ExplainableModel, method: str) -> None:
    with pytest.raises(InvalidArgument, match="spatial"):
        call(model, method, targets=[[0], [1]], layer="fc")


@pytest.mark.parametrize("method", AT_A_BLOCK)
def test_a_layer_that_runs_twice_per_forward_is_refused(
    model: ExplainableModel, method: str
) -> None:
    """Each block calls its ReLU twice: which call to explain is ambiguous, so say so."""
    with pytest.raises(InvalidArgument, match="more than once"):
        call(model, method, targets=[[0], [1]], layer="layer1.relu")


@pytest.mark.parametrize("method", WITH_TARGETS)
@pytest.mark.parametrize("bad", [NUM_CLASSES, -1])
def test_target_out_of_range_names_the_valid_range(
    model: ExplainableModel, method: str, bad: int
) -> None:
    with pytest.raises(InvalidArgument, match=rf"target class {bad} .*\(0\.\.9\)"):
        call(model, method, targets=[[1], [2, bad]])


@pytest.mark.parametrize("top_k", [NUM_CLASSES + 1, -1])
def test_top_k_out_of_range_is_refused(model: ExplainableModel, top_k: int) -> None:
    with pytest.raises(InvalidArgument, match=r"top_k must be in \[1, 10\]"):
        call(model, "gradcam", top_k=top_k)


def test_classes_and_top_k_together_are_refused(model: ExplainableModel) -> None:
    both = TargetRequest(classes=(1,), top_k=2)
    with pytest.raises(InvalidArgument, match="not both"):
        call(model, "gradcam", targets=[both, 1])


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("count", [1, 3])
def test_a_target_list_must_match_the_batch(
    model: ExplainableModel, method: str, count: int
) -> None:
    targets = [[0]] * count
    with pytest.raises(InvalidArgument, match=f"{count} targets given for a batch of 2"):
        call(model, method, targets=targets)


def test_a_cache_list_must_match_the_batch(model: ExplainableModel) -> None:
    with pytest.raises(InvalidArgument, match="1 cache entries for a batch of 2"):
        call(model, "gradcam", cached=[None])


def _with_value(value: float) -> torch.Tensor:
    x = images(2)
    x[1, 2, 5, 7] = value
    return x


BAD_INPUTS: dict[str, tuple[object, str]] = {
    "nan": (_with_value(float("nan")), "NaN or infinite"),
    "inf": (_with_value(float("inf")), "NaN or infinite"),
    "-inf": (_with_value(float("-inf")), "NaN or infinite"),
    "float64": (images(2).double(), "float32"),
    "uint8": (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "float32"),
    "no batch dimension": (images(1)[0], r"\(N, 3, H, W\)"),
    "one channel": (images(2)[:, :1], r"\(N, 3, H, W\)"),
    "empty batch": (images(2)[:0], r"N >= 1"),
    "too small": (images(2)[:, :, :4, :4], "too small"),
    "numpy array": (np.zeros((2, 3, 32, 32), dtype=np.float32), "torch.Tensor"),
}


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_bad_input_tensor_is_refused(model: ExplainableModel, method: str, case: str) -> None:
    x, message = BAD_INPUTS[case]
    with pytest.raises(InvalidArgument, match=message):
        call(model, method, x=x)


@pytest.mark.parametrize("method", ALL)
def test_unknown_option_names_the_valid_options(model: ExplainableModel, method: str) -> None:
    with pytest.raises(InvalidArgument, match=r"unknown option.*no_such_option") as raised:
        call(model, method, options={"no_such_option": 1})
    declared = [option.name for option in METHODS[method].options]
    for name in declared:
        assert name in str(raised.value)
    if not declared:
        assert "valid options: none" in str(raised.value)


OPTIONS = sorted(
    (method_id, option.name) for method_id, method in METHODS.items() for option in method.options
)


@pytest.mark.parametrize(("method", "option"), OPTIONS)
@pytest.mark.parametrize("bad", ["abc", float("nan"), -1e9, [1, 2, 3]])
def test_a_bad_option_value_is_refused(
    model: ExplainableModel, method: str, option: str, bad: object
) -> None:
    with pytest.raises(InvalidArgument, match=f"option {option}"):
        call(model, method, options={option: bad})


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("integrated_gradients", {"steps": 0}),
        ("integrated_gradients", {"steps": 2.5}),
        ("smoothgrad", {"samples": 0}),
        ("smoothgrad", {"noise": -0.1}),
        ("occlusion", {"window": [0, 4]}),
        ("occlusion", {"stride": 0}),
        ("feature_maps", {"top_k": -1}),
        ("embedding", {"normalize": "maybe"}),
    ],
)
def test_an_out_of_range_option_says_what_is_allowed(
    model: ExplainableModel, method: str, options: dict[str, object]
) -> None:
    (name,) = options
    with pytest.raises(InvalidArgument, match=rf"option {name} must (be|.*in \[)"):
        call(model, method, options=options)


def test_cam_on_a_layer_it_does_not_apply_to_is_refused(model: ExplainableModel) -> None:
    with pytest.raises(MethodNotApplicable, match="gradcam"):
        call(model, "cam", targets=[[0], [1]], layer="layer1")


class Boom(RuntimeError):
    """An error raised from inside the model, standing in for any failure mid-run."""


@contextmanager
def failing_forward(module: nn.Module, at_call: int) -> Iterator[list[int]]:
    """``module`` raises ``Boom`` on its ``at_call``-th forward; yields the call count."""
    calls = [0]

    def hook(_m: nn.Module, _args: tuple[object, ...], _out: object) -> None:
        calls[0] += 1
        if calls[0] == at_call:
            raise Boom(f"forward call {at_call}")

    handle = module.register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


@pytest.mark.parametrize("method", ALL)
def test_hooks_are_released_when_the_model_fails_mid_run(
    model: ExplainableModel, method: str
) -> None:
    """Fail the classifier's last layer on its first, middle and last call of a normal run."""
    targets = [[1, 2], [3]]
    call(model, method, targets=targets)  # builds what is built once (the head after a layer)
    with failing_forward(model.submodule("fc"), at_call=0) as counted:
        call(model, method, targets=targets)
    total = counted[0]
    assert total >= 1
    for at_call in sorted({1, (total + 1) // 2, total}):
        with pytest.raises(Boom), failing_forward(model.submodule("fc"), at_call):
            call(model, method, targets=targets)
        assert leftover_hooks(model.module) == [], (method, at_call)
    call(model, method, targets=targets)  # and the model still works afterwards


@pytest.mark.parametrize("method", sorted(m for m, v in METHODS.items() if v.needs_gradients))
def test_hooks_are_released_when_a_backward_pass_fails(
    model: ExplainableModel, method: str
) -> None:
    def hook(_m: nn.Module, _grad_in: object, _grad_out: object) -> None:
        raise Boom("backward")

    handle = model.submodule("fc").register_full_backward_hook(hook)
    try:
        with pytest.raises(Boom):
            call(model, method, targets=[[1, 2], [3]])
    finally:
        handle.remove()
