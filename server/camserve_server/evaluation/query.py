"""An evaluation as the domain sees it, free of protobuf: the images, methods and checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..query import ImageSource

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), x1 and y1 exclusive


@dataclass(frozen=True)
class EvaluationQuery:
    """One ``Evaluate`` call: the images (or a set's name), the methods and what to score.

    Zeros and empty values take the defaults: every faithfulness score, the model's
    top-1 class of each image, the default layer, 15 px of pointing tolerance, five
    sanity stages."""

    model: str
    methods: tuple[str, ...]
    images: tuple[ImageSource, ...] = ()
    set_name: str = ""
    targets: tuple[int, ...] = ()
    layer: str | None = None
    metrics: tuple[str, ...] = ()
    faithfulness_steps: int = 0
    faithfulness_percentile: int = 0
    boxes: tuple[tuple[Box, ...], ...] = ()
    pointing_tolerance: int | None = None
    sanity_check: bool = False
    sanity_stages: int = 0
    seed: int = 0
    include_random: bool = False
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
