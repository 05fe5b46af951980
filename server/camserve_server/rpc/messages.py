"""Protobuf conversions every service shares: an image input, method options, class scores.

Each servicer converts its own messages with these; none imports another's helpers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from camserve import tensors
from camserve.v1 import explain_pb2 as pb

from ..answers import ClassScore
from ..errors import InvalidArgument
from ..query import ImageSource


def image_source(message: pb.ImageInput) -> ImageSource:
    """An ``ImageInput`` (encoded bytes or a tensor) as an ``ImageSource``."""
    which = message.WhichOneof("source")
    if which == "encoded":
        if not message.encoded:
            raise InvalidArgument("the image bytes are empty")
        return ImageSource(encoded=message.encoded)
    if which == "tensor":
        try:
            return ImageSource(tensor=tensors.from_proto(message.tensor))
        except ValueError as exc:
            raise InvalidArgument(f"bad tensor: {exc}") from None
    raise InvalidArgument("the request carries no image: set input.encoded or input.tensor")


def option_values(options: Mapping[str, pb.OptionValue]) -> dict[str, Any]:
    """A request's ``options`` map as Python values (whole numbers as ints)."""
    return {name: _option(value) for name, value in options.items()}


def _option(value: pb.OptionValue) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number":
        number = value.number
        return int(number) if number.is_integer() else number
    if kind == "text":
        return value.text
    if kind == "flag":
        return value.flag
    if kind == "numbers":
        return [int(v) if float(v).is_integer() else v for v in value.numbers.values]
    raise InvalidArgument("an option value is empty")


def option_value(value: Any) -> pb.OptionValue:
    """A Python option default as an ``OptionValue``."""
    if isinstance(value, bool):
        return pb.OptionValue(flag=value)
    if isinstance(value, int | float):
        return pb.OptionValue(number=float(value))
    if isinstance(value, tuple | list):
        return pb.OptionValue(numbers=pb.NumberList(values=[float(v) for v in value]))
    return pb.OptionValue(text=str(value))


def class_scores(scores: Iterable[ClassScore]) -> list[pb.ClassScore]:
    """Class scores as ``ClassScore`` messages."""
    return [
        pb.ClassScore(index=c.index, label=c.label, probability=c.probability, logit=c.logit)
        for c in scores
    ]
