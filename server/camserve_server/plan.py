"""A request resolved once: ``make_plan(query, loaded, limits) -> Plan``.

Every check of a request runs here, before any work: the method exists and serves the
model, its options parse, the targets are in range, the layer resolves, the reply can
fit in one message. What comes after (the cache, the batcher, the device workers,
the engine) trusts the plan and checks nothing again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument, choices
from .faithfulness import Faithfulness, faithfulness_request
from .methods import Method, TargetRequest, get_method
from .methods.base import validate_targets
from .models.loading import LoadedModel
from .options import parse_options
from .query import ExplainQuery
from .reply_size import (
    DEFAULT_OUTPUT_SIDE,
    check_reply_fits,
    default_output_size,
    reply_bytes,
    unique_classes,
)

MAX_TARGETS = 64
HEATMAP_DTYPES = ("float32", "float16", "uint8")

Options = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Limits:
    """The server's bounds a plan is checked against (``config.Settings`` has them)."""

    max_message_bytes: int
    max_image_pixels: int


@dataclass(frozen=True)
class Output:
    """How the answer's maps are wanted: size (None: the picture's, capped), dtype, raw."""

    size: tuple[int, int] | None
    dtype: str
    return_raw: bool


@dataclass(frozen=True)
class Plan:
    """What to run for one request: model, method object, layer, targets and options,
    all resolved and valid, the shape of the answer, and the faithfulness scores to
    compute with its maps (None: none)."""

    model: LoadedModel
    method: Method
    layer: str | None
    target: TargetRequest
    options: Options
    output: Output
    deadline: float | None
    faithfulness: Faithfulness | None = None

    @property
    def cache_layer(self) -> str | None:
        """The layer whose activation the cache keys and serves, or None when the method
        reads no cacheable activation."""
        return self.layer if self.method.caches_layer else None


def make_plan(query: ExplainQuery, loaded: LoadedModel, limits: Limits) -> Plan:
    """Resolve and check ``query`` against ``loaded``; ``InvalidArgument`` names what is wrong."""
    method = get_method(query.method)
    if method.id not in loaded.methods:
        raise InvalidArgument(
            f"method {method.id!r} is not available for model {loaded.name!r}; "
            f"its methods: {choices(loaded.methods)}"
        )
    options = parse_options(method.id, method.options, query.options)
    classes = unique_classes(tuple(query.classes))
    if len(classes) > MAX_TARGETS or query.top_k > MAX_TARGETS:
        raise InvalidArgument(f"at most {MAX_TARGETS} targets per request")
    target = TargetRequest(classes=classes, top_k=query.top_k)
    validate_targets([target], loaded.primary.num_classes)
    if query.dtype not in HEATMAP_DTYPES:
        raise InvalidArgument(f"heatmap dtype must be one of {', '.join(HEATMAP_DTYPES)}")
    output = Output(size=query.out_size, dtype=query.dtype, return_raw=query.return_raw)
    if method.uses_targets:
        _check_reply_size(loaded, method, query, len(classes) or query.top_k or 1, limits)
    layer = None
    if method.uses_layer and (query.layer or not method.own_default_layer):
        layer = loaded.primary.resolve_layer(query.layer)
    faithfulness = _faithfulness(method, query)
    return Plan(
        model=loaded,
        method=method,
        layer=layer,
        target=target,
        options=tuple(sorted((k, _hashable(v)) for k, v in options.items())),
        output=output,
        deadline=query.deadline,
        faithfulness=faithfulness,
    )


def _faithfulness(method: Method, query: ExplainQuery) -> Faithfulness | None:
    """The faithfulness scores asked for, checked; only a method with a map per target
    class has maps to score."""
    request = faithfulness_request(
        query.faithfulness, query.faithfulness_steps, query.faithfulness_percentile
    )
    if request is not None and not method.uses_targets:
        raise InvalidArgument(
            f"method {method.id!r} makes no map per target class: faithfulness scores "
            f"({', '.join(request.scores)}) need one"
        )
    return request


def _check_reply_size(
    loaded: LoadedModel, method: Method, query: ExplainQuery, targets: int, limits: Limits
) -> None:
    """Refuse a request whose heatmaps cannot fit in one reply.

    An encoded picture's maps default to its size, capped: its header is read only
    when the cap itself could be too large. A tensor's maps default to the tensor's
    size, as do its raw attributions."""
    limit = limits.max_message_bytes
    source = query.source
    picture = source.picture_size(limits.max_image_pixels) if source.encoded is None else None
    raw_input = (picture or loaded.primary.input_size) if query.return_raw else None
    raw_channels = 3 if method.family in ("gradient", "perturbation") else 1
    if query.out_size is not None:
        output = query.out_size
    elif picture is not None:
        output = picture
    else:
        largest = (DEFAULT_OUTPUT_SIDE, DEFAULT_OUTPUT_SIDE)
        if reply_bytes(targets, largest, query.dtype, raw_input, raw_channels) <= limit:
            return
        size = source.picture_size(limits.max_image_pixels)
        assert size is not None  # an encoded image always has a header size (or raised)
        output = default_output_size(size)
    check_reply_fits(reply_bytes(targets, output, query.dtype, raw_input, raw_channels), limit)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
