"""What the SDK returns: plain dataclasses of numpy arrays and Python values.

Heatmaps always reach the caller as float32 in [0, 1], whatever ``dtype`` they
travelled in (uint8 maps are divided by 255, float16 maps widened): the
request's ``dtype`` only trades precision for bandwidth. ``Explanation.dtype``
names the wire dtype.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from camserve import _reprs, tensors
from camserve._inputs import HEATMAP_DTYPES, OptionDefault, option_from_proto
from camserve.errors import InternalError
from camserve.v1 import explain_pb2 as pb

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from PIL import Image as PILImage

FloatArray = npt.NDArray[np.float32]
Record = TypeVar("Record", bound="DataclassInstance")


def decoded(message: pb.Tensor, what: str) -> npt.NDArray[Any]:
    """A ``Tensor`` the server sent, as an array; ``InternalError`` naming ``what`` if malformed."""
    try:
        return tensors.from_proto(message, copy=True)
    except ValueError as exc:
        raise InternalError(f"the server sent a malformed {what}: {exc}") from None


def from_fields(cls: type[Record], message: Any, **others: Any) -> Record:
    """A ``cls`` dataclass of ``message``'s fields of the same names; ``others`` give the
    fields that are converted, renamed or computed."""
    copied = {f.name: getattr(message, f.name) for f in fields(cls) if f.name not in others}
    return cls(**copied, **others)


def _unit_float(values: npt.NDArray[Any]) -> FloatArray:
    if values.dtype == np.uint8:
        return (values.astype(np.float32) / np.float32(255.0)).astype(np.float32)
    return np.clip(values.astype(np.float32), 0.0, 1.0)


@dataclass(frozen=True)
class ClassScore:
    """One class's score: index, label ("" without labels), softmax probability, logit."""

    index: int
    label: str
    probability: float
    logit: float

    @property
    def name(self) -> str:
        """The label, or the index as text when the model has no labels."""
        return self.label or str(self.index)

    def __repr__(self) -> str:
        return f"ClassScore({self.index}, {self.name!r}, p={self.probability:.4g})"


@dataclass(frozen=True)
class Timings:
    """Where a request's time went on the server, in milliseconds."""

    decode_ms: float = 0.0
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True)
class Explanation:
    """One image's explanation.

    ``heatmaps`` is float32 ``(T, H, W)`` in [0, 1], one map per entry of
    ``targets`` (T = 0 for methods that explain no class); ``raw`` is None unless
    ``return_raw=True``: then ``(T, h, w)`` CAMs at feature resolution or
    ``(T, 3, H, W)`` attributions. ``scores`` are the top classes, most probable
    first; ``logits`` maps their indices to their logits.
    """

    model: str
    method: str
    variant: str
    layer: str
    targets: list[int]
    labels: list[str]
    heatmaps: FloatArray
    empty: list[bool]
    raw: FloatArray | None
    scores: list[ClassScore]
    cache_hit: bool
    timings: Timings
    metrics: dict[str, float]
    image_size: tuple[int, int]
    dtype: str
    request_id: str = ""

    @property
    def heatmap(self) -> FloatArray:
        """The first target's heatmap, float32 ``(H, W)`` in [0, 1]."""
        if self.heatmaps.shape[0] == 0:
            raise InternalError(f"method {self.method!r} returned no heatmap")
        first: FloatArray = self.heatmaps[0]
        return first

    @property
    def logits(self) -> dict[int, float]:
        """Logits of the top classes, by class index."""
        return {score.index: score.logit for score in self.scores}

    @property
    def top(self) -> ClassScore:
        """The most probable class."""
        return self.scores[0]

    def overlay(
        self, image: Any, *, target: int = 0, colormap: str = "jet", alpha: float = 0.5
    ) -> PILImage.Image:
        """The ``target``-th heatmap over ``image`` (a path, bytes, PIL image or uint8 array),
        as a PIL image of the image's size (imports ``camserve.render``)."""
        from camserve.render import overlay

        return overlay(image, self.heatmaps[target], colormap=colormap, alpha=alpha)

    def __repr__(self) -> str:
        top = f"{self.top.name} {self.top.probability:.3f}" if self.scores else "none"
        return (
            f"Explanation(model={self.model!r}, method={self.method!r}, layer={self.layer!r}, "
            f"targets={_reprs.brief(self.targets)}, labels={_reprs.brief(self.labels)}, "
            f"heatmaps={_reprs.brief(self.heatmaps)}, raw={_reprs.brief(self.raw)}, "
            f"top={top!r}, cache_hit={self.cache_hit}, total_ms={self.timings.total_ms:.4g})"
        )

    def _repr_png_(self) -> bytes | None:
        """The heatmaps, coloured (jet) side by side, for notebooks; None when there are none."""
        if self.heatmaps.shape[0] == 0:
            return None
        from camserve.render.notebook import heatmaps_png

        return heatmaps_png(self)

    def _repr_html_(self) -> str | None:
        """Each heatmap with its caption (method, class, probability), for notebooks."""
        if self.heatmaps.shape[0] == 0:
            return None
        from camserve.render.notebook import explanation_html

        return explanation_html(self)


def class_scores(messages: Iterable[pb.ClassScore]) -> list[ClassScore]:
    """``ClassScore`` messages as ``ClassScore``s, in their order."""
    return [ClassScore(s.index, s.label, float(s.probability), float(s.logit)) for s in messages]


_WIRE_NAMES = {code: name for name, code in HEATMAP_DTYPES.items()}


def explanation(message: pb.ExplainResponse) -> Explanation:
    """An ``ExplainResponse`` as an ``Explanation``."""
    maps = [_unit_float(decoded(h.map, "heatmap")) for h in message.heatmaps]
    height, width = message.image_height, message.image_width
    if maps and any(m.ndim != 2 or m.shape != maps[0].shape for m in maps):
        raise InternalError("the server sent heatmaps of different or non-2-D shapes")
    heatmaps = np.stack(maps) if maps else np.zeros((0, height, width), np.float32)
    raw = None
    if any(h.HasField("raw") for h in message.heatmaps):
        raws = [decoded(h.raw, "raw map").astype(np.float32) for h in message.heatmaps]
        if any(r.shape != raws[0].shape for r in raws):
            raise InternalError("the server sent raw maps of different shapes")
        raw = np.stack(raws)
    wire = message.heatmaps[0].map.dtype if message.heatmaps else pb.DTYPE_FLOAT32
    t = message.timings
    return Explanation(
        model=message.model,
        method=message.method,
        variant=message.variant,
        layer=message.layer,
        targets=[h.target for h in message.heatmaps],
        labels=[h.label for h in message.heatmaps],
        heatmaps=heatmaps,
        empty=[h.empty for h in message.heatmaps],
        raw=raw,
        scores=class_scores(message.top_classes),
        cache_hit=message.cache_hit,
        timings=Timings(t.decode_ms, t.queue_ms, t.compute_ms, t.total_ms),
        metrics=dict(message.metrics),
        image_size=(height, width),
        dtype=_WIRE_NAMES.get(wire, "float32"),
        request_id=message.request_id,
    )


@dataclass(frozen=True)
class Activations:
    """A layer's output for one image.

    ``maps`` is float32 ``(K, h, w)``, one per entry of ``channels`` (None when
    only the profile was asked for); ``profile`` the mean activation per channel.
    """

    layer: str
    maps: FloatArray | None
    channels: list[int]
    profile: FloatArray

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)

    def _repr_png_(self) -> bytes | None:
        """The maps as a grid labelled with their channel numbers, for notebooks."""
        if self.maps is None or self.maps.shape[0] == 0:
            return None
        from camserve.render import feature_map_grid

        labels = [f"ch {c}" for c in self.channels]
        return _reprs.png_bytes(feature_map_grid(self.maps, labels=labels, cell=64))


def activations(message: pb.ActivationsResponse) -> Activations:
    """An ``ActivationsResponse`` as ``Activations``."""
    maps = decoded(message.maps, "feature map") if message.HasField("maps") else None
    return Activations(
        layer=message.layer,
        maps=None if maps is None else maps.astype(np.float32),
        channels=list(message.channels),
        profile=decoded(message.profile, "profile").astype(np.float32),
    )


@dataclass(frozen=True)
class Filters:
    """A convolution's weights, float32 ``(K, C, kh, kw)``, and the layer's name."""

    layer: str
    weights: FloatArray

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)

    def _repr_png_(self) -> bytes:
        """The filters as tiles, for notebooks."""
        from camserve.render import filter_tiles

        return _reprs.png_bytes(filter_tiles(self.weights))


def filters(message: pb.FiltersResponse) -> Filters:
    """A ``FiltersResponse`` as ``Filters``."""
    return Filters(message.layer, decoded(message.weights, "weights").astype(np.float32))


def embedding(message: pb.EmbedResponse) -> FloatArray:
    """An ``EmbedResponse``'s vector, float32 ``(dim,)``."""
    return decoded(message.vector, "vector").astype(np.float32).reshape(-1)


@dataclass(frozen=True)
class ModelInfo:
    """A model the server serves. ``input_size`` is (height, width); ``labels`` may be empty."""

    name: str
    layers: list[str]
    default_layer: str
    input_size: tuple[int, int]
    num_classes: int
    labels: list[str]
    methods: list[str]
    format: str = ""
    weights_digest: str = ""
    weights_source: str = ""  # a file and digest prefix, a torchvision entry, or "random, seed 0"

    def label(self, index: int) -> str:
        """Class ``index``'s label, or the index as text."""
        return self.labels[index] if 0 <= index < len(self.labels) else str(index)

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self)


def model_info(message: pb.ModelInfo) -> ModelInfo:
    """A ``ModelInfo`` message as a ``ModelInfo``."""
    return from_fields(
        ModelInfo,
        message,
        layers=list(message.layers),
        input_size=(message.input_height, message.input_width),
        labels=list(message.labels) if message.has_labels else [],
        methods=list(message.methods),
    )


@dataclass(frozen=True)
class MethodInfo:
    """An explanation method: ``options`` maps each option's name to its default."""

    id: str
    family: str
    uses_layer: bool
    uses_targets: bool
    description: str = ""
    reference: str = ""
    options: Mapping[str, OptionDefault | None] = field(default_factory=dict)
    option_help: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return _reprs.dataclass_repr(self, skip=("option_help",))


def method_info(message: pb.MethodInfo) -> MethodInfo:
    """A ``MethodInfo`` message as a ``MethodInfo``."""
    return from_fields(
        MethodInfo,
        message,
        options={o.name: option_from_proto(o.default) for o in message.options},
        option_help={o.name: o.description for o in message.options},
    )


__all__ = [
    "Activations",
    "ClassScore",
    "Explanation",
    "Filters",
    "MethodInfo",
    "ModelInfo",
    "Timings",
    "activations",
    "class_scores",
    "decoded",
    "embedding",
    "explanation",
    "filters",
    "from_fields",
    "method_info",
    "model_info",
]
