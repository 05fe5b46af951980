"""What the set queries share: argument ranges, the class label of a prediction, and the
fields every member an answer shows carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from ..errors import InvalidArgument
from ..models.loading import LoadedModel
from . import prepare

Choice = TypeVar("Choice", bound=str)


@dataclass(frozen=True, kw_only=True)
class ShownMember:
    """A member as an answer shows it: its id, predicted class and label, and a thumbnail."""

    id: str
    predicted: int
    label: str
    thumbnail: bytes = b""  # PNG; empty when none was asked for


def in_range(name: str, value: int, default: int, high: int) -> int:
    """``value`` checked to lie in ``[1, high]``; 0 means ``default``."""
    if value == 0:
        return default
    if not 1 <= value <= high:
        raise InvalidArgument(f"{name} must be in [1, {high}] (0 = {default}), got {value}")
    return value


def one_of(name: str, value: str, choices: tuple[Choice, ...]) -> Choice:
    """``value`` as the one of ``choices`` it equals; ``InvalidArgument`` naming them if none."""
    for choice in choices:
        if value == choice:
            return choice
    raise InvalidArgument(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def thumbnail_side(value: int) -> int:
    """A thumbnail side in ``[0, MAX_THUMBNAIL_SIDE]`` pixels; 0 means no thumbnails."""
    if not 0 <= value <= prepare.MAX_THUMBNAIL_SIDE:
        raise InvalidArgument(
            f"thumbnail_size must be in [0, {prepare.MAX_THUMBNAIL_SIDE}] (0 = none), got {value}"
        )
    return value


def class_label(loaded: LoadedModel | None, predicted: int) -> str:
    """The model's name for class ``predicted``; empty when it has no labels or no such class."""
    labels = loaded.labels if loaded is not None else None
    return labels[predicted] if labels and 0 <= predicted < len(labels) else ""


__all__ = ["ShownMember", "class_label", "in_range", "one_of", "thumbnail_side"]
