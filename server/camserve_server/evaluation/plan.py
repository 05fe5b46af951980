"""An evaluation resolved once: ``plan_evaluation(query, loaded, pictures, limits)``.

Every check runs here, before any work and before the job is admitted: each method
exists, serves the model, makes a map per target class and takes its options; the
scores, targets, boxes and sanity settings are in range; the images decode, share one
size, and with the methods and stages fit the server's budget of maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InvalidArgument, choices
from ..faithfulness import SCORE_NAMES, Faithfulness, faithfulness_request
from ..methods import Method, get_method
from ..models.loading import LoadedModel
from ..models.preprocess import Placement
from ..options import parse_options
from .metric_info import POINTING_GAME
from .pointing import to_input_frame
from .query import Box, EvaluationQuery

DEFAULT_TOLERANCE = 15
MAX_TOLERANCE = 1000
DEFAULT_STAGES = 5
MAX_STAGES = 16
MAX_BOXES = 64
MAX_SEED = 2**63 - 1
RANDOM = "random"

Picture = tuple[torch.Tensor, Placement | None]  # the model's input (3, H, W), where it sits


@dataclass(frozen=True)
class EvaluationLimits:
    """The server's bounds: images per evaluation, maps per evaluation."""

    max_images: int
    max_maps: int


@dataclass(frozen=True)
class MethodPlan:
    """One method to evaluate: the method, its parsed options, the layer it reads."""

    method: Method
    options: dict[str, Any]
    layer: str | None


@dataclass(frozen=True)
class EvaluationPlan:
    """What to run: the inputs ``(N, 3, H, W)`` on the CPU, each image's class (None:
    its top-1), the methods, the scores, the boxes on the input (None: no pointing
    game), the sanity stages (0: no check), and the seed."""

    loaded: LoadedModel
    inputs: torch.Tensor
    targets: tuple[int, ...] | None
    methods: tuple[MethodPlan, ...]
    layer: str
    faithfulness: Faithfulness | None
    boxes: tuple[tuple[Box, ...], ...] | None
    tolerance: int
    sanity_stages: int
    seed: int
    include_random: bool

    @property
    def images(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def total_maps(self) -> int:
        """Maps the evaluation computes: every image and method, once per sanity stage too."""
        return self.images * len(self.methods) * (1 + self.sanity_stages)


def check_query(query: EvaluationQuery, loaded: LoadedModel, images: int) -> None:
    """The checks that need no decoded image: run before anything is read or decoded."""
    if not query.methods:
        raise InvalidArgument("name at least one method to evaluate")
    if len(set(query.methods)) != len(query.methods):
        raise InvalidArgument("each method may be named once")
    for method_id in query.methods:
        _method(method_id, loaded)
    unknown = sorted(set(query.method_options) - set(query.methods))
    if unknown:
        raise InvalidArgument(
            f"options given for {', '.join(map(repr, unknown))}, not among the evaluated "
            f"methods ({', '.join(query.methods)})"
        )
    if images == 0:
        raise InvalidArgument("the evaluation has no image: give images or a set")
    for what, count in (("targets", len(query.targets)), ("boxes", len(query.boxes))):
        if count not in (0, images):
            raise InvalidArgument(f"{count} {what} given for {images} images: one per image")
    if query.sanity_check and not loaded.primary.layer_access:
        raise InvalidArgument(
            f"model {loaded.name!r} is {loaded.format}: the sanity check re-initialises "
            "parameters, which needs a torch model"
        )
    if not 0 <= query.seed <= MAX_SEED:
        raise InvalidArgument(f"seed must be in [0, 2^63 - 1], got {query.seed}")


def plan_evaluation(
    query: EvaluationQuery,
    loaded: LoadedModel,
    pictures: Sequence[Picture],
    limits: EvaluationLimits,
) -> EvaluationPlan:
    """Resolve and check ``query`` with its decoded ``pictures``; ``InvalidArgument``
    names what is wrong."""
    check_query(query, loaded, len(pictures))
    if len(pictures) > limits.max_images:
        raise InvalidArgument(
            f"{len(pictures)} images; the server evaluates at most {limits.max_images} "
            "at once (--max-evaluation-images)"
        )
    model = loaded.primary
    sizes = {tuple(x.shape) for x, _ in pictures}
    if len(sizes) > 1:
        raise InvalidArgument(
            f"the images must share one input size; got {sorted(sizes)} "
            "(encoded images are resized to the model's input)"
        )
    methods = tuple(_method_plan(method_id, query, loaded) for method_id in query.methods)
    faithfulness = _faithfulness(query)
    if query.targets:
        bad = [t for t in query.targets if not 0 <= t < model.num_classes]
        if bad:
            raise InvalidArgument(
                f"target {bad[0]} is out of range: the model has {model.num_classes} classes"
            )
    stages = _sanity_stages(query)
    plan = EvaluationPlan(
        loaded=loaded,
        inputs=torch.stack([x for x, _ in pictures]),
        targets=tuple(query.targets) or None,
        methods=methods,
        layer=model.resolve_layer(query.layer) if model.layer_outputs else "",
        faithfulness=faithfulness,
        boxes=_boxes(query, pictures, model.input_size),
        tolerance=_tolerance(query),
        sanity_stages=stages,
        seed=query.seed,
        include_random=query.include_random,
    )
    if plan.total_maps > limits.max_maps:
        raise InvalidArgument(
            f"this evaluation would compute {plan.total_maps} maps ({plan.images} images x "
            f"{len(methods)} methods x {1 + stages} models); the server's budget is "
            f"{limits.max_maps} (--max-evaluation-maps): fewer images, methods or stages"
        )
    return plan


def _method(method_id: str, loaded: LoadedModel) -> Method:
    method = get_method(method_id)
    if method.id not in loaded.methods:
        raise InvalidArgument(
            f"method {method.id!r} is not available for model {loaded.name!r}; "
            f"its methods: {choices(loaded.methods)}"
        )
    if not method.uses_targets:
        raise InvalidArgument(
            f"method {method.id!r} makes no map per target class: there is nothing to evaluate"
        )
    return method


def _method_plan(method_id: str, query: EvaluationQuery, loaded: LoadedModel) -> MethodPlan:
    method = _method(method_id, loaded)
    options = parse_options(method.id, method.options, query.method_options.get(method_id))
    layer = None
    if method.uses_layer and (query.layer or not method.own_default_layer):
        layer = loaded.primary.resolve_layer(query.layer)
    return MethodPlan(method=method, options=options, layer=layer)


def _faithfulness(query: EvaluationQuery) -> Faithfulness | None:
    """The faithfulness scores asked for (every one when none is named); the pointing
    game may be named too, and needs boxes."""
    names = query.metrics or SCORE_NAMES
    if POINTING_GAME in names and not query.boxes:
        raise InvalidArgument(f"{POINTING_GAME!r} needs boxes, one list per image")
    scores = tuple(name for name in names if name != POINTING_GAME)
    return faithfulness_request(scores, query.faithfulness_steps, query.faithfulness_percentile)


def _sanity_stages(query: EvaluationQuery) -> int:
    if not query.sanity_check:
        return 0
    stages = query.sanity_stages or DEFAULT_STAGES
    if not 1 <= stages <= MAX_STAGES:
        raise InvalidArgument(f"sanity_stages must be in [1, {MAX_STAGES}], got {stages}")
    return stages


def _tolerance(query: EvaluationQuery) -> int:
    tolerance = DEFAULT_TOLERANCE if query.pointing_tolerance is None else query.pointing_tolerance
    if not 0 <= tolerance <= MAX_TOLERANCE:
        raise InvalidArgument(
            f"pointing_tolerance must be in [0, {MAX_TOLERANCE}] pixels, got {tolerance}"
        )
    return tolerance


def _boxes(
    query: EvaluationQuery, pictures: Sequence[Picture], input_size: tuple[int, int]
) -> tuple[tuple[Box, ...], ...] | None:
    """Every image's boxes on the model's input, checked; None without boxes."""
    if not query.boxes:
        return None
    placed = []
    for index, (boxes, (_, placement)) in enumerate(zip(query.boxes, pictures, strict=True)):
        if len(boxes) > MAX_BOXES:
            raise InvalidArgument(f"image {index} has {len(boxes)} boxes; at most {MAX_BOXES}")
        for box in boxes:
            x0, y0, x1, y1 = box
            if not all(math.isfinite(v) for v in box) or x1 <= x0 or y1 <= y0:
                raise InvalidArgument(
                    f"image {index}: box {box} is not (x0, y0, x1, y1) with x0 < x1, y0 < y1"
                )
        placed.append(tuple(to_input_frame(box, placement, input_size) for box in boxes))
    return tuple(placed)


__all__ = ["RANDOM", "EvaluationLimits", "EvaluationPlan", "MethodPlan", "plan_evaluation"]
