"""``evaluate``'s request: every argument lands in its field of ``EvaluateRequest``, what the
SDK can check is refused before anything is sent with a message naming the argument, and
the default deadline grows with the work asked."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from camserve import ExplainClient, InvalidArgumentError
from camserve._evaluate_request import default_deadline, evaluate_request
from camserve.v1 import evaluate_pb2 as epb

RGB = np.full((8, 10, 3), 200, np.uint8)
TENSOR = np.zeros((3, 16, 16), np.float32)


def _png(color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _request(**given: Any) -> epb.EvaluateRequest:
    arguments: dict[str, Any] = {
        "model": "demo",
        "methods": ["gradcam", "saliency"],
        "images": None,
        "tensors": None,
        "set": None,
        "targets": None,
        "layer": None,
        "metrics": None,
        "faithfulness_steps": 0,
        "faithfulness_percentile": 0,
        "boxes": None,
        "pointing_tolerance": None,
        "sanity_check": False,
        "sanity_stages": 0,
        "seed": 0,
        "include_random": True,
        "method_options": None,
    }
    if not {"images", "tensors", "set"} & set(given):
        arguments["images"] = [_png(), _png((1, 2, 3))]
    arguments.update(given)
    return evaluate_request(**arguments)


def test_every_argument_lands_in_its_field(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(_png())
    request = _request(
        methods=["gradcam", "occlusion"],
        images=[str(path), path, _png(), Image.new("RGB", (5, 5)), RGB, TENSOR],
        targets=[1, 2, 3, 0, 0, 2],
        layer="features",
        metrics=["deletion", "insertion", "deletion"],
        faithfulness_steps=32,
        faithfulness_percentile=90,
        boxes=[
            [(0, 0, 4, 4)],
            [],
            None,
            [[1, 1, 3, 3], (2, 2, 5, 5)],
            np.array([[0, 0, 2, 2]]),
            [],
        ],
        pointing_tolerance=7,
        sanity_check=True,
        sanity_stages=3,
        seed=-5,
        include_random=False,
        method_options={"occlusion": {"window": 8, "stride": (4, 4)}},
    )
    assert request.model == "demo" and request.layer == "features" and request.set == ""
    assert list(request.methods) == ["gradcam", "occlusion"]
    kinds = [image.WhichOneof("source") for image in request.images]
    assert kinds == ["encoded"] * 5 + ["tensor"]  # a float array is a tensor
    assert request.images[0].encoded == request.images[1].encoded == _png()
    assert list(request.targets) == [1, 2, 3, 0, 0, 2]
    assert list(request.metrics) == ["deletion", "insertion"]
    assert request.faithfulness_options.steps == 32
    assert request.faithfulness_options.percentile == 90
    assert [len(entry.boxes) for entry in request.boxes] == [1, 0, 0, 2, 1, 0]
    assert request.boxes[3].boxes[1] == epb.Box(x0=2, y0=2, x1=5, y1=5)
    assert request.HasField("pointing_tolerance") and request.pointing_tolerance == 7
    assert request.sanity_check and request.sanity_stages == 3
    assert request.seed == -5 and request.include_random is False
    options = request.method_options["occlusion"].options
    assert options["window"].number == 8
    assert list(options["stride"].numbers.values) == [4.0, 4.0]


def test_defaults_leave_the_server_its_defaults() -> None:
    request = _request()
    assert len(request.images) == 2 and not request.targets and not request.metrics
    assert not request.HasField("faithfulness_options")
    assert not request.HasField("pointing_tolerance")
    assert not request.boxes and not request.sanity_check and request.sanity_stages == 0
    assert request.include_random is True and not request.method_options


def test_tensors_a_set_and_a_class_for_every_image() -> None:
    batch = np.zeros((3, 3, 8, 8), np.float32)
    request = _request(tensors=batch, targets=4)
    assert [image.WhichOneof("source") for image in request.images] == ["tensor"] * 3
    assert list(request.targets) == [4, 4, 4]
    listed = _request(tensors=[TENSOR, TENSOR[None]])
    assert len(listed.images) == 2
    from_set = _request(set="shapes", targets=[0, 1, 2], metrics="deletion", methods="gradcam")
    assert from_set.set == "shapes" and not from_set.images
    assert list(from_set.targets) == [0, 1, 2]  # the server checks the count
    assert list(from_set.metrics) == ["deletion"] and list(from_set.methods) == ["gradcam"]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"model": ""}, "model is required"),
        ({"methods": []}, "methods is empty"),
        ({"methods": ["gradcam", ""]}, "methods must be non-empty strings"),
        ({"methods": ["gradcam", "saliency", "gradcam"]}, "methods names gradcam more than once"),
        ({"images": None}, r"give exactly one of images=, tensors= and set= \(got none\)"),
        ({"images": [RGB], "set": "s"}, r"exactly one of .* \(got images and set\)"),
        ({"images": "cat.png"}, "images must be a list of images, got a single image"),
        ({"images": RGB}, "got a single image"),
        ({"images": []}, "images is empty"),
        ({"images": [RGB, 42]}, r"images\[1\]: image must be a path"),
        ({"images": [RGB, "missing.png"]}, r"images\[1\]: cannot read image 'missing.png'"),
        ({"tensors": TENSOR}, "tensors must be a list of .* got one array of shape"),
        ({"tensors": [np.zeros((2, 4, 4), np.float32)]}, r"tensors\[0\]: tensor must have shape"),
        ({"set": ""}, "set must be an image set's name"),
        ({"targets": [1]}, "targets has 1 classes for 2 images"),
        ({"targets": [1, -1]}, r"targets must be in \[0, "),
        ({"targets": [1, True]}, "targets must be an integer"),
        ({"targets": []}, "targets has 0 classes"),
        ({"set": "s", "targets": 3}, "with set=, give one target per member"),
        ({"layer": 3}, "layer must be a string"),
        ({"metrics": ["deletion", "pointing_game"]}, "pointing_game needs boxes="),
        (
            {"faithfulness_steps": 1},
            r"faithfulness_steps must be 0 \(the default\) or in \[2, 256\]",
        ),
        ({"faithfulness_percentile": 100}, r"faithfulness_percentile must be 0 .* \[1, 99\]"),
        ({"boxes": [[(0, 0, 1, 1)]]}, "boxes has 1 entries for 2 images"),
        ({"boxes": {"a.png": [(0, 0, 1, 1)]}}, "boxes must be a list with one list"),
        ({"boxes": [[(0, 0, 1)], []]}, r"boxes\[0\]\[0\] must be 4 numbers"),
        ({"boxes": [[], [(5, 0, 5, 1)]]}, r"boxes\[1\]\[0\] must have x0 < x1 and y0 < y1"),
        ({"boxes": [[(0, 0, float("inf"), 1)], []]}, r"boxes\[0\]\[0\] must be finite"),
        ({"boxes": [[], None]}, "boxes holds no box; pass None for no pointing game"),
        ({"pointing_tolerance": 5}, "pointing_tolerance needs boxes="),
        (
            {"boxes": [[(0, 0, 1, 1)], []], "pointing_tolerance": 1001},
            r"pointing_tolerance must be in \[0, 1000\]",
        ),
        ({"sanity_stages": 3}, "sanity_stages needs sanity_check=True"),
        ({"sanity_check": True, "sanity_stages": 17}, r"sanity_stages must be 0 .* \[1, 16\]"),
        ({"sanity_check": 1}, "sanity_check must be True or False"),
        ({"include_random": None}, "include_random must be True or False"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"seed": 2**63}, "seed must be in"),
        ({"method_options": {"occlusion": {"window": 8}}}, "names 'occlusion', which is not"),
        ({"method_options": {"gradcam": 3}}, r"method_options\['gradcam'\] must map"),
        ({"method_options": {"gradcam": {"x": object()}}}, "option gradcam.x: expected a bool"),
        ({"method_options": [("gradcam", {})]}, "method_options must map a method id"),
    ],
)
def test_bad_arguments_are_refused_before_sending(given: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        _request(**given)


def test_the_default_deadline_grows_with_images_and_sanity_stages() -> None:
    four = _request(images=[RGB] * 4)
    assert default_deadline(four, 30.0) == 120.0
    checked = _request(images=[RGB] * 4, sanity_check=True)
    assert default_deadline(checked, 30.0) == 120.0 * 6  # five stages by default
    staged = _request(images=[RGB] * 4, sanity_check=True, sanity_stages=2)
    assert default_deadline(staged, 30.0) == 120.0 * 3
    assert default_deadline(_request(set="shapes"), 30.0) == 30.0  # a set counts as one
    assert default_deadline(four, None) is None


def test_the_client_checks_arguments_before_connecting() -> None:
    client = ExplainClient("127.0.0.1:1")  # nothing listens there
    try:
        with pytest.raises(InvalidArgumentError, match="sanity_stages needs sanity_check"):
            client.evaluate(model="demo", methods=["gradcam"], images=[RGB], sanity_stages=2)
        with pytest.raises(InvalidArgumentError, match="methods is empty"):
            client.evaluate_events(model="demo", methods=[], set="shapes")
    finally:
        client.close()
