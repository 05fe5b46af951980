"""The contract between the optimisation algorithms and the service that runs them.

A job method (activation maximisation, DeepDream, ...) validates a ``JobRequest``
and creates a ``Job``: an object the service steps one optimisation step at a
time on the model's device, so it can stream progress, preview the image, stop
on cancellation within one step, and interleave jobs with explanation batches.

Images are ``(3, H, W)`` float32 tensors in the model's normalised input space;
``Normalisation`` maps them to and from 0..1 pixels, where every job keeps its
image (clamped) and where the adversarial budget is measured.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

import torch

from ..errors import InvalidArgument
from ..models import ExplainableModel
from ..options import Option, parse_options


@dataclass(frozen=True)
class Normalisation:
    """The model's preprocessing normalisation: ``x = (pixels - mean) / std`` per channel.

    Added to the contract (``ExplainableModel`` carries no mean/std): the service
    fills ``JobRequest.normalisation`` from the model's ``Preprocess`` (``from_preprocess``).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_values(cls, mean: Sequence[float], std: Sequence[float]) -> Normalisation:
        m = tuple(float(v) for v in mean)
        s = tuple(float(v) for v in std)
        if len(m) != 3 or len(s) != 3 or any(v == 0.0 for v in s):
            raise ValueError("mean and std need three values each, std non-zero")
        return cls(mean=(m[0], m[1], m[2]), std=(s[0], s[1], s[2]))

    @classmethod
    def from_preprocess(cls, preprocess: Any) -> Normalisation:
        """From any object with ``mean`` and ``std`` (``models.imaging.Preprocess``)."""
        return cls.from_values(preprocess.mean, preprocess.std)

    def _view(self, values: tuple[float, float, float], like: torch.Tensor) -> torch.Tensor:
        shape = (3, 1, 1) if like.dim() == 3 else (1, 3, 1, 1)
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(shape)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(3, H, W)`` or ``(N, 3, H, W)`` to pixel values (0..1 when valid)."""
        return x * self._view(self.std, x) + self._view(self.mean, x)

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixel values to the model's normalised input space."""
        return (pixels - self._view(self.mean, pixels)) / self._view(self.std, pixels)


@dataclass
class JobRequest:
    """One job, as the service hands it to a method (tensors already on the model's device)."""

    method: str
    image: torch.Tensor | None  # normalised (3, H, W); None when the method starts from noise
    target: int | None  # class index (class visualisation, fooling, targeted adversarial)
    layer: str | None  # a layer of the model (channel visualisation, deepdream, inversion, style)
    channel: int | None
    options: dict[str, Any]  # validate() returns a copy with every option parsed and filled
    seed: int
    style: torch.Tensor | None = None  # style_transfer's style image (normalised)
    # Contract addition: the model's mean/std, which every method needs (pixel clamp, epsilon).
    normalisation: Normalisation | None = None


@dataclass
class StepEvent:
    """Progress after one step: ``loss`` is minimised; ``objective`` is what the method reports
    (the activation, the class probability, the feature distance, ...)."""

    step: int  # 1-based count of steps done
    total: int
    loss: float
    objective: float
    # Contract addition: True once the job has nothing left to do (last step, or an early stop
    # such as fooling reaching its confidence); the service stops stepping and calls outcome().
    done: bool = False


@dataclass
class JobOutcome:
    """A finished job's image (normalised, CPU, float32), extra images, trace and logits."""

    tensor: torch.Tensor
    images: dict[str, torch.Tensor]
    trace: list[float]
    logits: torch.Tensor
    extra_logits: dict[str, torch.Tensor] = field(default_factory=dict)


class Job(Protocol):
    """A running optimisation; each ``step`` is short (one forward and one backward)."""

    total_steps: int

    def step(self) -> StepEvent: ...

    def preview(self) -> torch.Tensor: ...

    def outcome(self) -> JobOutcome: ...


class JobMethod(ABC):
    """A registered optimisation method: declares its options, validates, creates jobs."""

    id: ClassVar[str]
    family: ClassVar[str]
    summary: ClassVar[str]
    reference: ClassVar[str] = ""
    needs_image: ClassVar[bool] = False
    needs_target: ClassVar[bool] = False
    uses_layer: ClassVar[bool] = False
    options: ClassVar[tuple[Option, ...]]

    def validate(self, model: ExplainableModel, request: JobRequest) -> JobRequest:
        """A copy of ``request`` with options parsed and defaults filled; ``InvalidArgument``
        (naming the valid range) for a bad option, layer, channel, target or missing image.
        The step budget of the server is the service's check."""
        if request.normalisation is None:
            raise ValueError("JobRequest.normalisation must be set by the service")
        options = parse_options(self.id, self.options, request.options)
        if self.needs_image and request.image is None:
            raise InvalidArgument(f"method {self.id!r} needs an input image; none was given")
        if request.image is not None:
            check_image(request.image, "image")
        if request.target is not None or self.needs_target:
            check_target(model, request.target, self.id)
        checked = replace(request, options=options)
        return self.check(model, checked)

    def check(self, model: ExplainableModel, request: JobRequest) -> JobRequest:
        """Method-specific checks after the common ones; returns the (possibly filled) request."""
        return request

    @abstractmethod
    def create(self, model: ExplainableModel, request: JobRequest) -> Job:
        """A job ready to step; ``request`` has been through ``validate``."""


MAX_JOB_SIDE = 1024  # the largest image side a job optimises (memory per step)


def check_image(image: torch.Tensor, what: str) -> None:
    """A normalised ``(3, H, W)`` float tensor, each side in [8, MAX_JOB_SIDE], finite."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise InvalidArgument(f"{what} must have shape (3, H, W), got {tuple(image.shape)}")
    height, width = int(image.shape[1]), int(image.shape[2])
    if not (8 <= height <= MAX_JOB_SIDE and 8 <= width <= MAX_JOB_SIDE):
        raise InvalidArgument(
            f"{what} height and width must be in [8, {MAX_JOB_SIDE}], got {height}x{width}"
        )
    if not bool(torch.isfinite(image).all()):
        raise InvalidArgument(f"{what} contains NaN or infinite values")


def check_target(model: ExplainableModel, target: int | None, method_id: str) -> int:
    """The target class, required and in range."""
    last = model.num_classes - 1
    if target is None:
        raise InvalidArgument(f"method {method_id!r} needs a target class in [0, {last}]")
    if not 0 <= target <= last:
        raise InvalidArgument(
            f"target class {target} is out of range: the model has {model.num_classes} "
            f"classes (0..{last})"
        )
    return target
