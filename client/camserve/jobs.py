"""What ``visualize`` returns: progress events and the final picture, as numpy arrays.

``VisualizationResult.tensor`` is float32 ``(3, H, W)`` in the model's normalised
input space (feed it back to ``explain(tensor=...)``); ``.image`` is the same
picture as displayable uint8 RGB ``(H, W, 3)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from camserve import _reprs
from camserve._inputs import OptionDefault, option_from_proto
from camserve.errors import InternalError
from camserve.results import ClassScore, class_scores, decoded, from_fields
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import jobs_pb2 as jpb

FloatArray = npt.NDArray[np.float32]
ByteArray = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class VisualImage:
    """An image a job made: ``tensor`` float32 ``(3, H, W)`` normalised (None in previews),
    ``image`` uint8 RGB ``(H, W, 3)``."""

    name: str
    tensor: FloatArray | None
    image: ByteArray

    def to_pil(self) -> Any:
        """``image`` as a PIL image (imports Pillow)."""
        from PIL import Image

        return Image.fromarray(self.image, mode="RGB")

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)

    def _repr_png_(self) -> bytes:
        """The image, for notebooks."""
        return _reprs.rgb_png(self.image)


@dataclass(frozen=True)
class VisualizationProgress:
    """One optimisation step done: ``preview`` is set every ``preview_every`` steps."""

    step: int
    total: int
    loss: float
    objective: float
    elapsed_ms: float
    preview: ByteArray | None = None

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)

    def _repr_png_(self) -> bytes | None:
        """The preview, when this step has one, for notebooks."""
        return None if self.preview is None else _reprs.rgb_png(self.preview)


@dataclass(frozen=True)
class VisualizationResult:
    """A finished job.

    ``scores`` are the top classes on the picture, most probable first;
    ``predictions`` the same for other images by name (adversarial: ``"original"``,
    the predictions before the attack); ``images`` the method's extra images by name
    (e.g. ``"original"``, ``"perturbation"``); ``trace`` the loss at every step.
    """

    model: str
    method: str
    layer: str
    tensor: FloatArray
    image: ByteArray
    scores: list[ClassScore]
    trace: npt.NDArray[np.float64]
    images: Mapping[str, VisualImage] = field(default_factory=dict)
    predictions: Mapping[str, list[ClassScore]] = field(default_factory=dict)
    steps: int = 0
    cached: bool = False
    seed: int = 0
    total_ms: float = 0.0

    @property
    def top(self) -> ClassScore:
        """The most probable class on the picture."""
        return self.scores[0]

    def to_pil(self) -> Any:
        """``image`` as a PIL image (imports Pillow)."""
        from PIL import Image

        return Image.fromarray(self.image, mode="RGB")

    def __repr__(self) -> str:
        top = f"{self.top.name} {self.top.probability:.3f}" if self.scores else "none"
        return (
            f"VisualizationResult(model={self.model!r}, method={self.method!r}, "
            f"layer={self.layer!r}, image={_reprs.brief(self.image)}, top={top!r}, "
            f"images={sorted(self.images)}, steps={self.steps}, cached={self.cached}, "
            f"seed={self.seed}, total_ms={self.total_ms:.4g})"
        )

    def _repr_png_(self) -> bytes:
        """The picture, for notebooks."""
        return _reprs.rgb_png(self.image)


VisualizationEvent = VisualizationProgress | VisualizationResult


def _rgb(message: pb.Tensor, what: str) -> ByteArray:
    array = decoded(message, what)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise InternalError(f"the server sent a malformed {what}: {array.dtype} {array.shape}")
    return np.ascontiguousarray(array, dtype=np.uint8)


def _image(message: jpb.JobImage) -> VisualImage:
    tensor = None
    if message.HasField("tensor"):
        tensor = decoded(message.tensor, f"{message.name} tensor").astype(np.float32, copy=False)
    return VisualImage(name=message.name, tensor=tensor, image=_rgb(message.rgb, message.name))


def progress(message: jpb.JobProgress) -> VisualizationProgress:
    """A ``JobProgress`` message as a ``VisualizationProgress``."""
    preview = _rgb(message.preview.rgb, "preview") if message.HasField("preview") else None
    return from_fields(VisualizationProgress, message, preview=preview)


def result(message: jpb.JobResult) -> VisualizationResult:
    """A ``JobResult`` message as a ``VisualizationResult``."""
    picture = _image(message.image)
    if picture.tensor is None:
        raise InternalError("the server sent a result without its tensor")
    return VisualizationResult(
        model=message.model,
        method=message.method,
        layer=message.layer,
        tensor=picture.tensor,
        image=picture.image,
        scores=class_scores(message.top_classes),
        trace=np.asarray(list(message.trace), dtype=np.float64),
        images={m.name: _image(m) for m in message.images},
        predictions={p.name: class_scores(p.scores) for p in message.predictions},
        steps=message.steps,
        cached=message.cached,
        seed=message.seed,
        total_ms=message.total_ms,
    )


def event(message: jpb.VisualizeEvent) -> VisualizationEvent:
    """One message of the stream as progress or the result."""
    kind = message.WhichOneof("event")
    if kind == "progress":
        return progress(message.progress)
    if kind == "result":
        return result(message.result)
    raise InternalError("the server sent an empty job event")


@dataclass(frozen=True)
class JobOptionInfo:
    """One option of a job method: default, valid range or choices, and what it does."""

    name: str
    default: OptionDefault | None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class JobMethodInfo:
    """A job method (``visualize(method=...)``) and its options."""

    id: str
    family: str
    summary: str
    needs_image: bool
    needs_target: bool
    uses_layer: bool
    options: Mapping[str, JobOptionInfo] = field(default_factory=dict)


def job_method_info(message: jpb.JobMethodInfo) -> JobMethodInfo:
    """A ``JobMethodInfo`` message as a ``JobMethodInfo``."""
    options = {
        o.name: JobOptionInfo(
            name=o.name,
            default=option_from_proto(o.default),
            minimum=o.minimum if o.HasField("minimum") else None,
            maximum=o.maximum if o.HasField("maximum") else None,
            choices=tuple(o.choices),
            description=o.description,
        )
        for o in message.options
    }
    return from_fields(JobMethodInfo, message, options=options)


__all__ = [
    "JobMethodInfo",
    "JobOptionInfo",
    "VisualImage",
    "VisualizationEvent",
    "VisualizationProgress",
    "VisualizationResult",
    "event",
    "job_method_info",
    "progress",
    "result",
]
