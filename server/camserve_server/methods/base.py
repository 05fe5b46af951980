"""What every method shares: its declaration, its input batch and its result."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from ..errors import InvalidArgument
from ..models import ExplainableModel
from ..options import Option

Family = Literal["cam", "gradient", "perturbation", "activation"]


class MethodNotApplicable(InvalidArgument):
    """The method cannot explain this model (e.g. ``cam`` without a GAP + linear head)."""


@dataclass(frozen=True)
class TargetRequest:
    """Explicit class indices, or the ``top_k`` predicted classes (default top-1)."""

    classes: tuple[int, ...] = ()
    top_k: int = 0


@dataclass(frozen=True)
class CachedLayer:
    """A layer's activation ``(K, h, w)`` and the logits ``(C,)`` of one image."""

    activation: torch.Tensor
    logits: torch.Tensor


@dataclass
class BatchInput:
    """One batch for one method: inputs ``(N, 3, H, W)`` on the model's device."""

    model: ExplainableModel
    x: torch.Tensor
    targets: list[TargetRequest]
    layer: str | None
    options: dict[str, Any]
    cached: list[CachedLayer | None]

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.x.shape[-2]), int(self.x.shape[-1]))


@dataclass
class SampleResult:
    """One sample's explanation, one row per target (tensors stay on the device).

    ``heatmaps`` ``(T, H, W)`` in [0, 1]; ``raw`` the CAM ``(T, h, w)`` or the
    attribution ``(T, 3, H, W)``; for activation methods ``raw`` holds the values
    and ``channels`` the channel indices.
    """

    targets: torch.Tensor
    heatmaps: torch.Tensor | None
    raw: torch.Tensor | None
    empty: torch.Tensor
    logits: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    channels: torch.Tensor | None = None


@dataclass
class BatchResult:
    """A method's answer for a batch; ``activations`` is the layer's output, for the cache."""

    method: str
    variant: str
    layer: str | None
    samples: list[SampleResult]
    activations: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class Method(ABC):
    """A registered explanation method. Subclasses declare, then implement ``run``."""

    id: ClassVar[str]
    family: ClassVar[Family]
    uses_layer: ClassVar[bool] = False
    # True: layer=None means the method's own default layer, not the model's.
    own_default_layer: ClassVar[bool] = False
    uses_targets: ClassVar[bool] = True
    needs_gradients: ClassVar[bool] = True
    caches_layer: ClassVar[bool] = False  # reads the layer's activation, so a cached one serves it
    heavy: ClassVar[bool] = False  # many passes per image: batched in small groups by the server
    # With a cached activation: whether the input pixels are still needed (Score-CAM masks
    # them), and whether the head after the layer runs (else nothing runs at all).
    pixels_on_cache_hit: ClassVar[bool] = False
    runs_head_on_cache_hit: ClassVar[bool] = False
    # Whether the method runs under the server's autocast (``precision``); False: in float32.
    mixed_precision: ClassVar[bool] = True
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    variant: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()

    def check_model(self, model: ExplainableModel) -> None:  # noqa: B027
        """Raise ``MethodNotApplicable`` when this method cannot serve ``model``."""

    @abstractmethod
    def run(self, batch: BatchInput) -> BatchResult:
        """Explain every sample of ``batch``."""

    def result(self, batch: BatchInput, samples: list[SampleResult], **extra: Any) -> BatchResult:
        return BatchResult(
            method=self.id,
            variant=self.variant or self.id,
            layer=batch.layer if self.uses_layer else None,
            samples=samples,
            **extra,
        )


def resolve_targets(requests: list[TargetRequest], logits: torch.Tensor) -> list[list[int]]:
    """Turn target requests into class lists, reading top-k from ``logits`` ``(N, C)``."""
    resolved: list[list[int]] = []
    for request, row in zip(requests, logits, strict=True):
        if request.classes:
            resolved.append(list(request.classes))
        else:
            k = request.top_k or 1
            resolved.append([int(c) for c in row.topk(k).indices.tolist()])
    return resolved


def validate_targets(requests: list[TargetRequest], num_classes: int) -> None:
    """Refuse out-of-range classes and top-k before any compute."""
    for request in requests:
        for c in request.classes:
            if not 0 <= c < num_classes:
                raise InvalidArgument(
                    f"target class {c} is out of range: the model has {num_classes} classes "
                    f"(0..{num_classes - 1})"
                )
        if request.classes and request.top_k:
            raise InvalidArgument("give either explicit target classes or top_k, not both")
        if not 0 <= request.top_k <= num_classes:
            raise InvalidArgument(f"top_k must be in [1, {num_classes}], got {request.top_k}")


@dataclass(frozen=True)
class Rows:
    """The flattened (sample, target) pairs of a batch: ``M = sum_i T_i`` rows."""

    sample: torch.Tensor
    target: torch.Tensor
    rank: torch.Tensor
    counts: list[int]

    @classmethod
    def from_targets(cls, targets: list[list[int]], device: torch.device) -> Rows:
        sample = [i for i, ts in enumerate(targets) for _ in ts]
        target = [c for ts in targets for c in ts]
        rank = [r for ts in targets for r in range(len(ts))]
        return cls(
            sample=torch.tensor(sample, dtype=torch.long, device=device),
            target=torch.tensor(target, dtype=torch.long, device=device),
            rank=torch.tensor(rank, dtype=torch.long, device=device),
            counts=[len(ts) for ts in targets],
        )

    def __len__(self) -> int:
        return int(self.sample.numel())

    def split(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Split a per-row tensor ``(M, ...)`` into one tensor per sample."""
        return list(torch.split(values, self.counts))

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The target logit of every row, ``(M,)``, from per-sample logits ``(N, C)``."""
        return logits[self.sample, self.target]


def package(
    rows: Rows,
    logits: torch.Tensor,
    heatmaps: torch.Tensor,
    raw: torch.Tensor,
    empty: torch.Tensor,
    metrics: dict[str, torch.Tensor] | None = None,
) -> list[SampleResult]:
    """Split per-row results into one ``SampleResult`` per sample."""
    per_metric = {name: rows.split(values) for name, values in (metrics or {}).items()}
    return [
        SampleResult(
            targets=targets,
            heatmaps=heat,
            raw=raw_i,
            empty=empty_i,
            logits=logits[i].detach(),
            metrics={name: parts[i] for name, parts in per_metric.items()},
        )
        for i, (targets, heat, raw_i, empty_i) in enumerate(
            zip(
                rows.split(rows.target),
                rows.split(heatmaps),
                rows.split(raw),
                rows.split(empty),
                strict=True,
            )
        )
    ]
