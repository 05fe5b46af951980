"""Logits of occluded copies of one image, recomputing only each window's changed boxes.

Every node of a chunk holds the original image's activation as channel rows and the
``B`` copies' recomputed boxes (``table.Boxed``); full copies are made only for nodes
run in full. A convolution or pooling box runs on the input slice its receptive field
needs (padded with the operator's fill at the borders); a pointwise, additive or
concatenating box runs on the same box of its inputs (the box itself, uncopied, when a
parent's box is the same). Nodes planned ``full`` run on the whole batch, as the
model's forward does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from ...models import ExplainableModel
from ..chunking import rows_per_pass, spans
from .graph import activations, call_node, cloned, traced, writes_inputs
from .plan import NodePlan, plan_nodes
from .table import Boxed, base_rows
from .work import MIN_SPEEDUP, Work, planned_work

AGREEMENT = 1e-4  # relative: the traced graph's logits against the model's own forward
# Planning an image holds every node's original output and the boxed nodes' rows: about
# three copies' outputs as the budget counts them (ResNet-18 and ResNet-50 at 224: 3.1)
SETUP_ROWS = 3
BOXED = ("input", "window", "local")  # nodes whose output a chunk holds as a table
KEPT = ("input", "constant", "unchanged")  # nodes whose original output a chunk reads as is


@dataclass(frozen=True)
class Image:
    """One image's traced graph and plans, the work they do, the original outputs of the
    ``KEPT`` nodes, every boxed node's rows (``table.base_rows``) and map size, and the
    bytes held while the image's chunks run (``cached_bytes``) and while it is planned
    (``setup_bytes``: every node's original output and the rows)."""

    graph: fx.GraphModule
    plans: dict[fx.Node, NodePlan]
    work: Work
    original: dict[fx.Node, Any]
    bases: dict[fx.Node, torch.Tensor]
    sizes: dict[fx.Node, tuple[int, int]]
    cached_bytes: int
    setup_bytes: int


def _bytes(values: Any) -> int:
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))


def _bases(
    graph: fx.GraphModule, plans: dict[fx.Node, NodePlan], original: dict[fx.Node, Any]
) -> dict[fx.Node, torch.Tensor]:
    """``base_rows`` of every node a box is computed at or read from (all 4-D maps)."""
    boxed = [n for n in graph.graph.nodes if n in plans and plans[n].mode in BOXED]
    needed = set(boxed) | {p for n in boxed for p in n.all_input_nodes}
    return {
        n: base_rows(original[n])
        for n in needed
        if isinstance(original[n], torch.Tensor) and original[n].dim() == 4
    }


def _boxes(
    plan: NodePlan, windows: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each copy's box corner ``(B, 2)``, rows ``(B, h)`` and columns ``(B, w)``."""
    assert plan.corners is not None
    corners = plan.corners[windows].to(device)
    rows = corners[:, :1] + torch.arange(plan.shape[0], device=device)
    cols = corners[:, 1:] + torch.arange(plan.shape[1], device=device)
    return corners, rows, cols


def _as_boxed(image: Image, node: fx.Node, value: Any, count: int) -> Boxed:
    """A parent's value as ``Boxed``: an unchanged one has an empty box in every copy."""
    if isinstance(value, Boxed):
        return value
    base = image.bases[node]
    empty = base.new_empty((count, base.shape[1], 0, 0))
    size = (int(value.shape[-2]), int(value.shape[-1]))
    corners = torch.zeros((count, 2), dtype=torch.long, device=base.device)
    return Boxed(base, size, corners, empty)


def _input(image: Image, node: fx.Node, windows: torch.Tensor, fill: float) -> Boxed:
    """The occluded copies: each window's box of the image with the window set to ``fill``."""
    plan = image.plans[node]
    assert plan.regions is not None
    device = image.bases[node].device
    corners, rows, cols = _boxes(plan, windows, device)
    regions = plan.regions[windows].to(device)
    clean = _as_boxed(image, node, image.original[node], len(windows))
    patch = clean.read(rows, cols, None)
    covered = ((rows >= regions[:, :1]) & (rows < regions[:, 1:2]))[:, :, None] & (
        (cols >= regions[:, 2:3]) & (cols < regions[:, 3:])
    )[:, None, :]
    patch = patch.masked_fill(covered[:, None], fill)
    return Boxed(clean.base, clean.size, corners, patch)


def _boxed(image: Image, node: fx.Node, windows: torch.Tensor, values: dict[fx.Node, Any]) -> Boxed:
    """The node's output for each copy: the original with the copy's box recomputed."""
    plan, count, device = image.plans[node], len(windows), image.bases[node].device
    corners, rows, cols = _boxes(plan, windows, device)
    if plan.window is not None:
        op = plan.window
        (parent,) = node.all_input_nodes
        in_rows = corners[:, :1] * op.rows.stride - op.rows.padding
        in_cols = corners[:, 1:] * op.cols.stride - op.cols.padding
        in_rows = in_rows + torch.arange(op.rows.input_length(plan.shape[0]), device=device)
        in_cols = in_cols + torch.arange(op.cols.input_length(plan.shape[1]), device=device)
        source = _as_boxed(image, parent, values[parent], count)
        patch = op.apply(source.read(in_rows, in_cols, op.fill))
    else:
        local = {}
        for parent in node.all_input_nodes:
            read = _as_boxed(image, parent, values[parent], count).read(rows, cols, None)
            shared = isinstance(values[parent], Boxed) and read is values[parent].patch
            local[parent] = read.clone() if shared and writes_inputs(image.graph, node) else read
        patch = call_node(image.graph, node, local)
    return Boxed(image.bases[node], image.sizes[node], corners, patch)


def _chunk_logits(image: Image, windows: torch.Tensor, fill: float) -> torch.Tensor:
    """Logits ``(B, C)`` of the occluded copies of windows ``windows``."""
    graph, plans, count = image.graph, image.plans, len(windows)
    last_use = {parent: node for node in graph.graph.nodes for parent in node.all_input_nodes}
    values: dict[fx.Node, Any] = {}
    logits: torch.Tensor | None = None
    for node in graph.graph.nodes:
        if node.op == "output":
            logits = _full(values[node.args[0]], plans[node.args[0]], count)
            break
        plan = plans[node]
        if plan.mode == "input":
            values[node] = _input(image, node, windows, fill)
        elif plan.mode in ("constant", "unchanged"):
            values[node] = image.original[node]
        elif plan.mode == "full":
            inputs = {
                parent: _full(values[parent], plans[parent], count)
                for parent in node.all_input_nodes
            }
            values[node] = call_node(graph, node, inputs)
        else:
            values[node] = _boxed(image, node, windows, values)
        for parent in node.all_input_nodes:
            if last_use[parent] is node:
                del values[parent]
    assert isinstance(logits, torch.Tensor)
    return logits


def _full(value: Any, plan: NodePlan, count: int) -> Any:
    """A node's output as the ``count`` full copies a node running in full reads."""
    if isinstance(value, Boxed):
        return value.dense()
    if plan.mode != "unchanged":
        return value
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 1:
        return value.expand(count, *value.shape[1:]).clone()
    return cloned(value)


@dataclass(frozen=True)
class Scores:
    """Logits ``(N, W, C)`` of every occluded copy; ``cut``: a projective-field threshold
    shrank some changed region (the logits are approximate); the work each image's plan
    did (``work.Work``)."""

    logits: torch.Tensor
    cut: bool
    work: list[Work]


def _regions(
    windows: list[tuple[int, int]], window: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Each window's region of the input ``(W, 4)``, clipped at the border."""
    corners = torch.tensor(windows, dtype=torch.long).reshape(-1, 2)
    return torch.stack(
        [
            corners[:, 0],
            (corners[:, 0] + window[0]).clamp(max=size[0]),
            corners[:, 1],
            (corners[:, 1] + window[1]).clamp(max=size[1]),
        ],
        dim=1,
    )


def _image(
    graph: fx.GraphModule,
    image: torch.Tensor,
    logits: torch.Tensor,
    input_regions: torch.Tensor,
    projective_field: float,
) -> Image | None:
    """The plans for one image ``(1, 3, H, W)`` and the windows' ``input_regions``, or None
    when the traced graph's logits differ from the model's own ``logits`` ``(1, C)`` or
    no layer is recomputed in part."""
    original = activations(graph, image)
    traced_logits = original[next(n for n in graph.graph.nodes if n.op == "output")]
    if not isinstance(traced_logits, torch.Tensor) or not torch.allclose(
        traced_logits.float(), logits, rtol=AGREEMENT, atol=AGREEMENT
    ):
        return None
    plans = plan_nodes(graph, original, input_regions, projective_field)
    if not any(plan.mode in ("window", "local") for plan in plans.values()):
        return None  # nothing to reuse: every layer would run in full
    work = planned_work(graph, plans, original, len(input_regions))
    bases = _bases(graph, plans, original)
    sizes = {node: (int(rows.shape[-2]), int(rows.shape[-1])) for node, rows in _maps(original)}
    setup = _bytes(original.values()) + _bytes(bases.values())
    kept = {n: v for n, v in original.items() if n in plans and plans[n].mode in KEPT}
    cached = _bytes(kept.values()) + _bytes(bases.values())
    return Image(graph, plans, work, kept, bases, sizes, cached, setup)


def _maps(original: dict[fx.Node, Any]) -> list[tuple[fx.Node, torch.Tensor]]:
    """The nodes whose original output is a ``(1, C, H, W)`` map, with it."""
    return [
        (node, value)
        for node, value in original.items()
        if isinstance(value, torch.Tensor) and value.dim() == 4
    ]


def _rows_within_budget(model: ExplainableModel, image: Image, chunk: int) -> int:
    """Copies per chunk once the image's cached outputs take their share of the model's
    memory budget: at most ``chunk``, and 0 (full passes instead) when planning the image
    and one copy would not fit."""
    budget, per_row = model.memory_budget_bytes, max(1, model.structure.activation_bytes)
    if image.setup_bytes + per_row > budget:
        return 0
    return max(1, min(chunk, (budget - image.cached_bytes) // per_row))


def _graph(model: ExplainableModel) -> fx.GraphModule | None:
    """The model's traced graph with one input, or None (a forward-only graph, no trace)."""
    if model.graph is not None:
        return None
    graph = traced(model.module)
    if graph is None or sum(node.op == "placeholder" for node in graph.graph.nodes) != 1:
        return None
    return graph


def estimated_work(
    model: ExplainableModel,
    x: torch.Tensor,
    windows: list[tuple[int, int]],
    window: tuple[int, int],
    projective_field: float = 1.0,
) -> Work | None:
    """The work the incremental path would do for one image ``x`` ``(1, 3, H, W)``, or
    None when it would not run; nothing is recomputed."""
    graph = _graph(model)
    if graph is None:
        return None
    regions = _regions(windows, window, (int(x.shape[-2]), int(x.shape[-1])))
    with torch.inference_mode():
        logits = model.forward(x).float()
        image = _image(graph, x, logits, regions, projective_field)
    return None if image is None else image.work


def incremental_occluded_logits(
    model: ExplainableModel,
    x: torch.Tensor,
    logits: torch.Tensor,
    windows: list[tuple[int, int]],
    window: tuple[int, int],
    fill: float,
    batch_size: int,
    projective_field: float = 1.0,
    min_speedup: float = MIN_SPEEDUP,
) -> Scores | None:
    """Logits of every occluded copy of ``x`` ``(N, 3, H, W)``, or None when the model has
    no module, does not trace, its traced graph's logits differ from ``logits`` (the
    model's own, of ``x``), no layer can be recomputed in part, the plan's estimated
    speed-up over full passes is below ``min_speedup`` (``work.Work.speedup``), or the
    original outputs it caches leave no room for a copy in the memory budget (checked
    before planning with ``SETUP_ROWS``, and after).
    ``projective_field`` below 1: Krypton's approximate regions (``plan.plan_nodes``)."""
    graph = _graph(model)
    per_row = max(1, model.structure.activation_bytes)
    if graph is None or model.memory_budget_bytes < (SETUP_ROWS + 1) * per_row:
        return None
    input_regions = _regions(windows, window, (int(x.shape[-2]), int(x.shape[-1])))
    chunk = rows_per_pass(model, batch_size)
    scores = logits.new_empty((x.shape[0], len(windows), logits.shape[1]))
    cut, works = False, []
    with torch.inference_mode():
        for sample in range(x.shape[0]):
            image = _image(
                graph,
                x[sample : sample + 1],
                logits[sample : sample + 1],
                input_regions,
                projective_field,
            )
            if image is None or image.work.speedup < min_speedup:
                return None
            rows = _rows_within_budget(model, image, chunk)
            if rows == 0:
                return None
            works.append(image.work)
            cut = cut or any(plan.cut for plan in image.plans.values())
            for start, stop in spans(len(windows), rows):
                ids = torch.arange(start, stop)
                scores[sample, start:stop] = _chunk_logits(image, ids, fill)
    return Scores(scores, cut, works)
