"""What a model's source says about its input and classes, and the preprocessing that
results once the config's own settings take precedence.

A torchvision weights entry gives its ``transforms()`` and ``meta["categories"]``; a timm
model its ``pretrained_cfg`` (and a ``config.json``'s ``label_names``). A setting the
config gives always wins. When the config changes ``input_size`` alone, the source's
resize is scaled with it (the same crop fraction), so a 224 px recipe does not crop
64 px out of a 232 px picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..config import ModelSpec
from .preprocess import Preprocess


@dataclass(frozen=True)
class SourceDefaults:
    """Settings a source recommends; None where it says nothing."""

    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize_mode: str | None = None
    resize_size: int | None = None  # the shorter side before the crop, at ``input_size``
    interpolation: str | None = None
    labels: tuple[str, ...] | None = None


NO_DEFAULTS = SourceDefaults()


def preprocess_for(spec: ModelSpec, defaults: SourceDefaults) -> Preprocess:
    """The model's ``Preprocess``: each setting from the config when it gives it, else from
    ``defaults`` when they have it, else the config's default."""

    def pick(setting: str) -> Any:
        recommended = getattr(defaults, setting)
        return getattr(spec, setting) if spec.sets(setting) or recommended is None else recommended

    input_size = pick("input_size")
    resize_size = pick("resize_size")
    if (
        not spec.sets("resize_size")
        and defaults.resize_size is not None
        and defaults.input_size is not None
        and input_size != defaults.input_size
    ):
        ratio = defaults.resize_size / min(defaults.input_size)
        resize_size = math.floor(min(input_size) * ratio + 1e-6)
    return Preprocess(
        input_size=input_size,
        mean=pick("mean"),
        std=pick("std"),
        resize_mode=pick("resize_mode"),
        resize_size=resize_size,
        interpolation=pick("interpolation"),
    )


def labels_for(file_labels: list[str] | None, defaults: SourceDefaults) -> list[str] | None:
    """The config's labels file when it names one, else the source's labels."""
    if file_labels is not None:
        return file_labels
    return list(defaults.labels) if defaults.labels is not None else None
