"""``evaluate``'s arguments as an ``EvaluateRequest``, checked before anything is sent.

What the SDK can refuse locally raises ``InvalidArgumentError`` naming the argument: no
image source or two of them, a single image where a list is expected, an unreadable
image, a method twice, targets or boxes that do not match the images one for one, a
malformed box, a setting out of the range ``evaluate.proto`` gives, a setting whose
feature is off (``sanity_stages`` without ``sanity_check``, ``pointing_tolerance``
without ``boxes``), options for a method not evaluated. Names of methods, scores and
layers are the server's to check.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from camserve._inputs import (
    ImageInput,
    OptionValue,
    _pil_image_class,
    encode_image,
    option_value,
    tensor_proto,
)
from camserve.errors import InvalidArgumentError
from camserve.v1 import evaluate_pb2 as epb
from camserve.v1 import explain_pb2 as pb

POINTING_GAME: Final = "pointing_game"
MAX_INT32: Final = 2**31 - 1
INT64: Final = (-(2**63), 2**63 - 1)
FAITHFULNESS_STEPS: Final = (2, 256)
FAITHFULNESS_PERCENTILE: Final = (1, 99)
POINTING_TOLERANCE: Final = (0, 1000)
SANITY_STAGES: Final = (1, 16)

BoxInput: TypeAlias = "Sequence[float] | npt.NDArray[Any]"
"""One box, ``(x0, y0, x1, y1)`` in pixels of the image as sent, ``x1`` and ``y1`` exclusive."""
ImageBoxesInput: TypeAlias = "Sequence[BoxInput] | npt.NDArray[Any] | None"
"""One image's boxes (any number; none or None leaves the image out of the pointing game)."""


def _integer(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgumentError(f"{what} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise InvalidArgumentError(f"{what} must be in [{low}, {high}], got {value}")
    return int(value)


def _setting(value: Any, what: str, valid: tuple[int, int]) -> int:
    """An integer setting where 0 means the server's default, else in ``valid``."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and value == 0:
        return 0
    low, high = valid
    try:
        return _integer(value, what, low, high)
    except InvalidArgumentError:
        raise InvalidArgumentError(
            f"{what} must be 0 (the default) or in [{low}, {high}], got {value!r}"
        ) from None


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise InvalidArgumentError(f"{what} must be True or False, got {value!r}")
    return bool(value)


def _names(value: str | Sequence[str] | None, what: str) -> list[str]:
    """A list of non-empty names (a lone string is one name)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        raise InvalidArgumentError(f"{what} must be a list of names, got {value!r}")
    names = list(items)
    for name in names:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"{what} must be non-empty strings, got {name!r}")
    return names


def _methods(methods: str | Sequence[str]) -> list[str]:
    names = _names(methods, "methods")
    if not names:
        raise InvalidArgumentError("methods is empty: name at least one method")
    doubled = sorted({name for name in names if names.count(name) > 1})
    if doubled:
        raise InvalidArgumentError(f"methods names {', '.join(doubled)} more than once")
    return names


def _metrics(metrics: str | Sequence[str] | None, boxes: bool) -> list[str]:
    """The scores named (none: every faithfulness score). ``pointing_game`` is scored
    whenever boxes are given; naming it alone asks for the pointing game only."""
    names = list(dict.fromkeys(_names(metrics, "metrics")))
    if POINTING_GAME in names and not boxes:
        raise InvalidArgumentError(f"{POINTING_GAME} needs boxes=, one list per image")
    return names


def _single_image(value: Any) -> bool:
    """Whether ``value`` is one image rather than a list of them."""
    if isinstance(value, str | os.PathLike | bytes | bytearray | memoryview):
        return True
    if isinstance(value, np.ndarray):
        return value.ndim <= 3
    pil_image = _pil_image_class()
    return pil_image is not None and isinstance(value, pil_image)


def _image(item: Any, index: int) -> pb.ImageInput:
    """``images[index]``: a floating-point array is a tensor, anything else an image."""
    try:
        if isinstance(item, np.ndarray) and np.issubdtype(item.dtype, np.floating):
            return pb.ImageInput(tensor=tensor_proto(item))
        return pb.ImageInput(encoded=encode_image(item))
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"images[{index}]: {exc.details}") from None


def _tensor(item: Any, index: int) -> pb.ImageInput:
    try:
        return pb.ImageInput(tensor=tensor_proto(item))
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"tensors[{index}]: {exc.details}") from None


def _image_inputs(
    images: Iterable[ImageInput] | None,
    tensors: Iterable[npt.ArrayLike] | npt.NDArray[Any] | None,
    set: str | None,
) -> list[pb.ImageInput]:
    """The images to send (read and encoded here); none for a set."""
    given = [
        name
        for name, v in (("images", images), ("tensors", tensors), ("set", set))
        if v is not None
    ]
    if len(given) != 1:
        which = f"got {' and '.join(given)}" if given else "got none"
        raise InvalidArgumentError(f"give exactly one of images=, tensors= and set= ({which})")
    if set is not None:
        if not isinstance(set, str) or not set:
            raise InvalidArgumentError(f"set must be an image set's name, got {set!r}")
        return []
    if images is not None:
        if _single_image(images):
            raise InvalidArgumentError("images must be a list of images, got a single image")
        inputs = [_image(item, k) for k, item in enumerate(images)]
    else:
        if isinstance(tensors, np.ndarray) and tensors.ndim == 3:
            raise InvalidArgumentError(
                "tensors must be a list of (3, H, W) arrays or one (N, 3, H, W) array, "
                f"got one array of shape {tensors.shape}"
            )
        inputs = [_tensor(item, k) for k, item in enumerate(tensors)]  # type: ignore[arg-type]
    if not inputs:
        raise InvalidArgumentError(f"{given[0]} is empty: give at least one image")
    return inputs


def _targets(targets: int | Sequence[int] | None, count: int | None) -> list[int]:
    """One class per image (a lone class is every image's); none: each image's top class."""
    if targets is None:
        return []
    if isinstance(targets, int | np.integer):  # a bool too: _integer refuses it
        one = _integer(targets, "targets", 0, MAX_INT32)
        if count is None:
            raise InvalidArgumentError("with set=, give one target per member (or None)")
        return [one] * count
    if not isinstance(targets, Iterable):
        raise InvalidArgumentError(f"targets must be classes, one per image, got {targets!r}")
    classes = [_integer(t, "targets", 0, MAX_INT32) for t in targets]
    if count is not None and len(classes) != count:
        raise InvalidArgumentError(
            f"targets has {len(classes)} classes for {count} images: give one per image"
        )
    if not classes:
        raise InvalidArgumentError("targets is empty; pass None for each image's top class")
    return classes


def _box(box: BoxInput, where: str) -> epb.Box:
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{where} must be 4 numbers (x0, y0, x1, y1), got {box!r}"
        ) from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise InvalidArgumentError(f"{where} must be finite, got {box!r}")
    if not (x0 < x1 and y0 < y1):
        raise InvalidArgumentError(f"{where} must have x0 < x1 and y0 < y1, got {box!r}")
    return epb.Box(x0=x0, y0=y0, x1=x1, y1=y1)


def _boxes(boxes: Sequence[ImageBoxesInput] | None, count: int | None) -> list[epb.ImageBoxes]:
    """One entry per image; an image with no boxes is left out of the pointing game."""
    if boxes is None:
        return []
    if isinstance(boxes, Mapping) or not isinstance(boxes, Sequence | np.ndarray):
        raise InvalidArgumentError(
            "boxes must be a list with one list of (x0, y0, x1, y1) boxes per image"
        )
    if count is not None and len(boxes) != count:
        raise InvalidArgumentError(
            f"boxes has {len(boxes)} entries for {count} images: give one per image "
            "([] for an image without boxes)"
        )
    entries = [
        epb.ImageBoxes(boxes=[_box(box, f"boxes[{i}][{k}]") for k, box in enumerate(each)])
        if each is not None
        else epb.ImageBoxes()
        for i, each in enumerate(boxes)
    ]
    if not any(entry.boxes for entry in entries):
        raise InvalidArgumentError("boxes holds no box; pass None for no pointing game")
    return entries


def _method_options(
    options: Mapping[str, Mapping[str, OptionValue]] | None, methods: Sequence[str]
) -> dict[str, epb.MethodOptions]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidArgumentError(
            "method_options must map a method id to its options, e.g. {'occlusion': {'window': 8}}"
        )
    chosen: dict[str, epb.MethodOptions] = {}
    for method, values in options.items():
        if method not in methods:
            raise InvalidArgumentError(
                f"method_options names {method!r}, which is not among methods "
                f"({', '.join(methods)})"
            )
        if not isinstance(values, Mapping):
            raise InvalidArgumentError(
                f"method_options[{method!r}] must map option names to values, got {values!r}"
            )
        converted = {name: option_value(f"{method}.{name}", v) for name, v in values.items()}
        chosen[method] = epb.MethodOptions(options=converted)
    return chosen


def evaluate_request(
    *,
    model: str,
    methods: str | Sequence[str],
    images: Iterable[ImageInput] | None,
    tensors: Iterable[npt.ArrayLike] | npt.NDArray[Any] | None,
    set: str | None,
    targets: int | Sequence[int] | None,
    layer: str | None,
    metrics: str | Sequence[str] | None,
    faithfulness_steps: int,
    faithfulness_percentile: int,
    boxes: Sequence[ImageBoxesInput] | None,
    pointing_tolerance: int | None,
    sanity_check: bool,
    sanity_stages: int,
    seed: int,
    include_random: bool,
    method_options: Mapping[str, Mapping[str, OptionValue]] | None,
) -> epb.EvaluateRequest:
    """A checked ``EvaluateRequest`` of ``evaluate``'s arguments; images are read and
    encoded here."""
    if not isinstance(model, str) or not model:
        raise InvalidArgumentError("model is required")
    if layer is not None and not isinstance(layer, str):
        raise InvalidArgumentError(f"layer must be a string, got {type(layer).__name__}")
    chosen = _methods(methods)
    check = _flag(sanity_check, "sanity_check")
    stages = _setting(sanity_stages, "sanity_stages", SANITY_STAGES)
    if stages and not check:
        raise InvalidArgumentError("sanity_stages needs sanity_check=True")
    if pointing_tolerance is not None and boxes is None:
        raise InvalidArgumentError("pointing_tolerance needs boxes= (the pointing game)")
    inputs = _image_inputs(images, tensors, set)
    count = len(inputs) if inputs else None
    request = epb.EvaluateRequest(
        model=model,
        methods=chosen,
        images=inputs,
        set=set or "",
        targets=_targets(targets, count),
        layer=layer or "",
        metrics=_metrics(metrics, boxes is not None),
        boxes=_boxes(boxes, count),
        sanity_check=check,
        sanity_stages=stages,
        seed=_integer(seed, "seed", *INT64),
        include_random=_flag(include_random, "include_random"),
        method_options=_method_options(method_options, chosen),
    )
    steps = _setting(faithfulness_steps, "faithfulness_steps", FAITHFULNESS_STEPS)
    percentile = _setting(
        faithfulness_percentile, "faithfulness_percentile", FAITHFULNESS_PERCENTILE
    )
    if steps or percentile:
        request.faithfulness_options.steps = steps
        request.faithfulness_options.percentile = percentile
    if pointing_tolerance is not None:
        request.pointing_tolerance = _integer(
            pointing_tolerance, "pointing_tolerance", *POINTING_TOLERANCE
        )
    return request


def default_deadline(request: epb.EvaluateRequest, client_timeout: float | None) -> float | None:
    """The client's timeout for each image sent (a set counts as one), times one plus the
    sanity stages when the check runs; None where the client has no timeout."""
    if client_timeout is None:
        return None
    passes = 1 + ((request.sanity_stages or 5) if request.sanity_check else 0)
    return client_timeout * max(1, len(request.images)) * passes


__all__ = [
    "POINTING_GAME",
    "BoxInput",
    "ImageBoxesInput",
    "default_deadline",
    "evaluate_request",
]
