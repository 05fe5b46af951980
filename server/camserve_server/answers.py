"""What each RPC answers, free of protobuf, made from a worker's ``ItemResult``.

One type per RPC: ``ExplainAnswer`` (Explain, ExplainStream), ``EmbedAnswer`` (Embed),
``ActivationsAnswer`` (Activations). ``servicer.py`` turns each into its reply message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .models.imaging import Placement, convert_heatmap, place_heatmap
from .plan import Plan
from .reply_size import default_output_size
from .runtime.workers import ItemResult

TOP_CLASSES = 5


@dataclass(frozen=True)
class PreparedInput:
    """The model's input for one request: the tensor ``(3, H, W)`` (None for a cache hit
    that reads no pixels), its size, where it sits on the picture, and the decode time."""

    x: torch.Tensor | None
    size: tuple[int, int]
    placement: Placement | None
    decode_s: float

    @property
    def picture_size(self) -> tuple[int, int]:
        """The caller's picture ``(height, width)``: the decoded image's, or the tensor's."""
        return self.placement.original_size if self.placement is not None else self.size

    def output_size(self, requested: tuple[int, int] | None) -> tuple[int, int]:
        """The heatmaps' size: the requested one, else the picture's (capped), else the
        tensor's."""
        if requested is not None:
            return requested
        if self.placement is not None:
            return default_output_size(self.placement.original_size)
        return self.size


@dataclass
class ClassScore:
    index: int
    label: str
    probability: float
    logit: float


@dataclass
class ExplainAnswer:
    """One explanation: a heatmap per target at the requested size and dtype, and context."""

    model: str
    method: str
    variant: str
    layer: str
    targets: list[int]
    labels: list[str]
    heatmaps: list[np.ndarray]
    empty: list[bool]
    raw: list[np.ndarray] | None
    top_classes: list[ClassScore]
    cache_hit: bool
    metrics: dict[str, float]
    image_size: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict)

    def array_bytes(self) -> int:
        """The bytes of the arrays as they go on the wire: nearly all of the reply."""
        raw = sum(int(r.size) * 4 for r in self.raw or [])  # sent as float32
        return sum(int(h.nbytes) for h in self.heatmaps) + raw


@dataclass
class EmbedAnswer:
    """A layer's embedding vector."""

    layer: str
    vector: np.ndarray

    def array_bytes(self) -> int:
        return int(self.vector.size) * 4


@dataclass
class ActivationsAnswer:
    """A layer's strongest feature maps ``(K, h, w)`` with their channel numbers, and the
    mean activation of every channel (``maps`` is None when only the profile was asked)."""

    layer: str
    profile: np.ndarray
    maps: np.ndarray | None = None
    channels: list[int] = field(default_factory=list)

    def array_bytes(self) -> int:
        return int(self.profile.size) * 4 + (0 if self.maps is None else int(self.maps.size) * 4)


def explain_answer(plan: Plan, prepared: PreparedInput, result: ItemResult) -> ExplainAnswer:
    """The heatmaps placed on the picture at the output size and dtype, with the top classes."""
    labels = plan.model.labels
    heatmaps: list[np.ndarray] = []
    maps_per_target = plan.method.uses_targets  # else the values are Embed's or Activations'
    if result.heatmaps is not None and maps_per_target:
        requested = plan.output.size
        if prepared.placement is not None:
            out_size = prepared.output_size(requested)
            placed = place_heatmap(result.heatmaps, prepared.placement, out_size)
        elif requested is not None:
            placed = torch.nn.functional.interpolate(
                result.heatmaps[:, None], size=requested, mode="bilinear", align_corners=False
            )[:, 0].clamp(0, 1)
        else:
            placed = result.heatmaps
        heatmaps = [convert_heatmap(h, plan.output.dtype) for h in placed]
    raw = None
    if plan.output.return_raw and result.raw is not None and maps_per_target:
        raw = [r.numpy() for r in result.raw]
    return ExplainAnswer(
        model=plan.model.name,
        method=plan.method.id,
        variant=result.variant,
        layer=result.layer or "",
        targets=result.targets,
        labels=[labels[t] if labels else "" for t in result.targets],
        heatmaps=heatmaps,
        empty=result.empty,
        raw=raw,
        top_classes=top_classes(result.logits, labels, len(result.targets)),
        cache_hit=result.cache_hit,
        metrics=per_target(result.metrics, result.targets),
        image_size=prepared.picture_size,
    )


def embed_answer(result: ItemResult) -> EmbedAnswer:
    """The embedding method's vector (its ``raw`` values)."""
    assert result.raw is not None
    return EmbedAnswer(layer=result.layer or "", vector=result.raw.numpy().astype(np.float32))


def activations_answer(result: ItemResult, *, profile_only: bool) -> ActivationsAnswer:
    """Feature maps (with the profile of their means) or the channel profile alone."""
    assert result.raw is not None
    values = result.raw.numpy().astype(np.float32)
    layer = result.layer or ""
    if profile_only:
        return ActivationsAnswer(layer=layer, profile=values)
    profile = values.mean(axis=(1, 2)).astype(np.float32)
    return ActivationsAnswer(
        layer=layer, profile=profile, maps=values, channels=list(result.channels or [])
    )


def top_classes(logits: torch.Tensor, labels: list[str] | None, targets: int) -> list[ClassScore]:
    """The most probable classes (at least ``TOP_CLASSES``, or as many as the targets)."""
    probabilities = torch.softmax(logits, dim=0)
    k = min(max(TOP_CLASSES, targets), probabilities.numel())
    top = probabilities.topk(k)
    return [
        ClassScore(
            index=int(i),
            label=labels[int(i)] if labels else "",
            probability=float(p),
            logit=float(logits[int(i)]),
        )
        for p, i in zip(top.values, top.indices, strict=True)
    ]


def per_target(metrics: dict[str, list[float]], targets: list[int]) -> dict[str, float]:
    """One number per metric and target: ``name`` for a single target, ``name/<class>`` else."""
    if len(targets) == 1:
        return {name: values[0] for name, values in metrics.items() if values}
    return {
        f"{name}/{target}": value
        for name, values in metrics.items()
        for target, value in zip(targets, values, strict=False)
    }
