"""Logits of occluded copies of one image, recomputing only each window's changed boxes.

Every node of a chunk holds the original image's activation and the ``B`` copies'
recomputed boxes, with their positions; full copies are made only for nodes run in
full. A convolution or pooling box runs on the input slice its receptive field needs
(padded with the operator's fill at the borders); a pointwise, additive or
concatenating box runs on the same box of its inputs.
Nodes planned ``full`` run on the whole batch, as the model's forward does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from ...models import ExplainableModel
from ..chunking import rows_per_pass, spans
from .graph import activations, call_node, cloned, traced
from .plan import NodePlan, plan_nodes

AGREEMENT = 1e-4  # relative: the traced graph's logits against the model's own forward


def _gather(
    tensor: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, fill: float | None
) -> torch.Tensor:
    """``tensor[b, :, rows[b], cols[b]]`` ``(B, C, len(rows), len(cols))``, ``tensor`` with
    ``B`` or one sample; indices outside the tensor read ``fill``."""
    height, width = tensor.shape[-2:]
    tensor = tensor.expand(rows.shape[0], -1, -1, -1)
    batch = torch.arange(rows.shape[0], device=rows.device)[:, None, None]
    picked = tensor[
        batch, :, rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, width - 1)[:, None, :]
    ].permute(0, 3, 1, 2)
    if fill is None:
        return picked
    inside = _inside(rows, height)[:, :, None] & _inside(cols, width)[:, None, :]
    return torch.where(inside[:, None], picked, torch.full_like(picked[:1, :1, :1, :1], fill))


def _inside(indices: torch.Tensor, size: int) -> torch.Tensor:
    return (indices >= 0) & (indices < size)


@dataclass(frozen=True)
class Patched:
    """``B`` copies of a node's output: the original image's ``(1, C, H, W)`` with each
    copy's recomputed ``patch`` ``(B, C, h, w)`` at its ``rows`` ``(B, h)`` and
    ``cols`` ``(B, w)``; full copies are made only for a node that runs in full."""

    original: torch.Tensor
    patch: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor

    def read(self, rows: torch.Tensor, cols: torch.Tensor, fill: float | None) -> torch.Tensor:
        """Every copy's values at ``rows`` x ``cols``, ``fill`` outside the layer."""
        base = _gather(self.original, rows, cols, fill)
        in_rows, in_cols = rows - self.rows[:, :1], cols - self.cols[:, :1]
        height, width = self.patch.shape[-2:]
        inside = _inside(in_rows, height)[:, :, None] & _inside(in_cols, width)[:, None, :]
        return torch.where(inside[:, None], _gather(self.patch, in_rows, in_cols, None), base)

    def dense(self) -> torch.Tensor:
        """The full copies ``(B, C, H, W)``."""
        count = self.patch.shape[0]
        out = self.original.expand(count, -1, -1, -1).clone()
        batch = torch.arange(count, device=out.device)[:, None, None]
        out[batch, :, self.rows[:, :, None], self.cols[:, None, :]] = self.patch.permute(
            0, 2, 3, 1
        ).to(out.dtype)
        return out


def _read(value: Any, rows: torch.Tensor, cols: torch.Tensor, fill: float | None) -> torch.Tensor:
    """Every copy's values of a node's output at ``rows`` x ``cols``."""
    if isinstance(value, Patched):
        return value.read(rows, cols, fill)
    return _gather(value, rows, cols, fill)


def _boxed(
    graph: fx.GraphModule,
    node: fx.Node,
    plan: NodePlan,
    windows: torch.Tensor,
    values: dict[fx.Node, Any],
    original: torch.Tensor,
) -> Patched:
    """The node's output for each copy: ``original`` with the copy's box recomputed."""
    assert plan.corners is not None
    device = original.device
    corners = plan.corners[windows].to(device)
    rows = corners[:, :1] + torch.arange(plan.shape[0], device=device)
    cols = corners[:, 1:] + torch.arange(plan.shape[1], device=device)
    if plan.window is not None:
        op = plan.window
        (parent,) = node.all_input_nodes
        in_rows = corners[:, :1] * op.rows.stride - op.rows.padding
        in_cols = corners[:, 1:] * op.cols.stride - op.cols.padding
        in_rows = in_rows + torch.arange(op.rows.input_length(plan.shape[0]), device=device)
        in_cols = in_cols + torch.arange(op.cols.input_length(plan.shape[1]), device=device)
        patch = op.apply(_read(values[parent], in_rows, in_cols, op.fill))
    else:
        local = {parent: _read(values[parent], rows, cols, None) for parent in node.all_input_nodes}
        patch = call_node(graph, node, local)
    return Patched(original, patch, rows, cols)


def _chunk_logits(
    graph: fx.GraphModule,
    plans: dict[fx.Node, NodePlan],
    original: dict[fx.Node, Any],
    occluded: torch.Tensor,
    windows: torch.Tensor,
) -> torch.Tensor:
    """Logits ``(B, C)`` of the occluded copies ``occluded`` of windows ``windows``."""
    count = occluded.shape[0]
    last_use = {parent: node for node in graph.graph.nodes for parent in node.all_input_nodes}
    values: dict[fx.Node, Any] = {}
    logits: torch.Tensor | None = None
    for node in graph.graph.nodes:
        if node.op == "output":
            logits = _full(values[node.args[0]], plans[node.args[0]], count)
            break
        plan = plans[node]
        if plan.mode == "input":
            values[node] = occluded
        elif plan.mode in ("constant", "unchanged"):
            values[node] = original[node]
        elif plan.mode == "full":
            inputs = {
                parent: _full(values[parent], plans[parent], count)
                for parent in node.all_input_nodes
            }
            values[node] = call_node(graph, node, inputs)
        else:
            values[node] = _boxed(graph, node, plan, windows, values, original[node])
        for parent in node.all_input_nodes:
            if last_use[parent] is node:
                del values[parent]
    assert isinstance(logits, torch.Tensor)
    return logits


def _full(value: Any, plan: NodePlan, count: int) -> Any:
    """A node's output as the ``count`` full copies a node running in full reads."""
    if isinstance(value, Patched):
        return value.dense()
    if plan.mode != "unchanged":
        return value
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 1:
        return value.expand(count, *value.shape[1:]).clone()
    return cloned(value)


def incremental_occluded_logits(
    model: ExplainableModel,
    x: torch.Tensor,
    logits: torch.Tensor,
    windows: list[tuple[int, int]],
    window: tuple[int, int],
    fill: float,
    batch_size: int,
) -> torch.Tensor | None:
    """Logits ``(N, len(windows), C)`` of every occluded copy of ``x`` ``(N, 3, H, W)``, or
    None when the model has no module, does not trace, its traced graph's logits differ
    from ``logits`` (the model's own, of ``x``), or no layer can be recomputed in part."""
    if model.graph is not None:
        return None
    graph = traced(model.module)
    if graph is None or sum(node.op == "placeholder" for node in graph.graph.nodes) != 1:
        return None
    (wh, ww), (height, width) = window, x.shape[-2:]
    corners = torch.tensor(windows, dtype=torch.long).reshape(-1, 2)
    input_regions = torch.stack(
        [
            corners[:, 0],
            (corners[:, 0] + wh).clamp(max=height),
            corners[:, 1],
            (corners[:, 1] + ww).clamp(max=width),
        ],
        dim=1,
    )
    chunk = rows_per_pass(model, batch_size)
    scores = logits.new_empty((x.shape[0], len(windows), logits.shape[1]))
    with torch.inference_mode():
        for sample in range(x.shape[0]):
            image = x[sample : sample + 1]
            original = activations(graph, image)
            traced_logits = original[next(n for n in graph.graph.nodes if n.op == "output")]
            if not isinstance(traced_logits, torch.Tensor) or not torch.allclose(
                traced_logits.float(), logits[sample : sample + 1], rtol=AGREEMENT, atol=AGREEMENT
            ):
                return None
            plans = plan_nodes(graph, original, input_regions)
            if not any(plan.mode in ("window", "local") for plan in plans.values()):
                return None  # nothing to reuse: every layer would run in full
            for start, stop in spans(len(windows), chunk):
                ids = torch.arange(start, stop)
                occluded = image.expand(stop - start, -1, -1, -1).clone()
                for row, (top, left) in enumerate(windows[start:stop]):
                    occluded[row, :, top : top + wh, left : left + ww] = fill
                scores[sample, start:stop] = _chunk_logits(graph, plans, original, occluded, ids)
    return scores
