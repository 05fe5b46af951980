"""The job service's domain objects, free of protobuf: a query in, progress and a result out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..answers import ClassScore
from ..query import ImageSource

MAX_PREVIEW_EVERY = 10_000
DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class JobQuery:
    """One ``Visualize`` call, as the domain sees it."""

    model: str
    method: str
    image: ImageSource | None = None
    style: ImageSource | None = None
    target: int | None = None
    layer: str | None = None
    channel: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    preview_every: int = 0  # 0: no previews
    top_k: int = 0  # 0: DEFAULT_TOP_K


@dataclass(frozen=True)
class JobPicture:
    """An image a job made: normalised ``(3, H, W)`` float32 (None in previews) and uint8 RGB."""

    name: str
    tensor: npt.NDArray[np.float32] | None
    rgb: npt.NDArray[np.uint8]


@dataclass(frozen=True)
class ProgressEvent:
    """One optimisation step done."""

    step: int
    total: int
    loss: float
    objective: float
    elapsed_s: float
    preview: JobPicture | None = None


@dataclass(frozen=True)
class ResultEvent:
    """A finished job: its picture, extra images, predictions and loss trace."""

    model: str
    method: str
    layer: str
    image: JobPicture
    images: list[JobPicture]
    top_classes: list[ClassScore]
    predictions: dict[str, list[ClassScore]]
    trace: list[float]
    steps: int
    cached: bool
    seed: int
    total_s: float


JobEvent = ProgressEvent | ResultEvent
