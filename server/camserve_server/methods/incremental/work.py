"""The forward work a plan does, counted from layer shapes, against full forward passes.

A node's work per copy is its output positions times the multiply-accumulates one
position costs (a convolution: ``C_out * C_in / groups * kh * kw``; a pooling:
``C * kh * kw``; a linear layer: ``out * in``; anything else: one per value), plus,
for a box, the values it reads (``table.Boxed.read``: a slice of each parent, and a
dense copy where a node running in full reads a box). Full passes do every node's
full work; Krypton (Nakandala et al., SIGMOD 2019, section 3.3) estimates the
incremental path's speed-up the same way, as the ratio of the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from .plan import NodePlan

# Fixed work per boxed node, in multiply-accumulates per copy: gathers, index
# arithmetic and Python dispatch that do not shrink with the box (tiny images)
PER_NODE = 20_000
# The estimated speed-up below which full passes run instead: on a 2-core x86 CPU,
# ResNet-18 with a 16 px window and stride 8 ran slower incrementally at 32 and 48 px
# (estimates 1.03, 1.07) and faster from 64 px on (1.15: 1.4x measured; 96 px 1.36: 2x)
MIN_SPEEDUP = 1.1


@dataclass(frozen=True)
class Work:
    """Per image, over all its windows: ``positions`` recomputed (summed over nodes),
    against ``full_positions`` in full passes; estimated ``operations`` against
    ``full_operations``."""

    positions: int
    full_positions: int
    operations: int
    full_operations: int

    @property
    def speedup(self) -> float:
        """Estimated speed-up over full passes: ``full_operations / operations``."""
        return self.full_operations / max(self.operations, 1)


def _per_position(graph: fx.GraphModule, node: fx.Node, out: torch.Tensor) -> int:
    """Multiply-accumulates of one output position (all channels) of one copy."""
    channels = int(out.shape[1]) if out.dim() >= 2 else 1
    if node.op == "call_module":
        module = graph.get_submodule(str(node.target))
        if isinstance(module, nn.Conv2d):
            kernel = math.prod(module.kernel_size)
            return channels * module.in_channels // module.groups * kernel
        if isinstance(module, nn.Linear):
            return channels * module.in_features
        if isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
            size = module.kernel_size
            return channels * (size * size if isinstance(size, int) else math.prod(size))
    return channels


def _positions(out: torch.Tensor) -> int:
    """Positions of one copy's output: ``H * W`` of a map, else the values over channels."""
    if out.dim() == 4:
        return int(out.shape[-2] * out.shape[-1])
    if out.dim() < 2:
        return 1
    return max(1, out[0].numel() // int(out.shape[1]))


def planned_work(
    graph: fx.GraphModule,
    plans: dict[fx.Node, NodePlan],
    values: dict[fx.Node, Any],
    windows: int,
) -> Work:
    """The work of ``plans`` for ``windows`` copies of one image (``values``: the original
    image's activations), and of full passes."""
    positions = full_positions = operations = full_operations = 0
    for node in graph.graph.nodes:
        plan, out = plans.get(node), values.get(node)
        if plan is None or plan.mode in ("constant", "input") or not isinstance(out, torch.Tensor):
            continue
        per_position, full = _per_position(graph, node, out), _positions(out)
        full_positions += full
        full_operations += full * per_position
        if plan.mode == "full":
            positions += full
            operations += full * per_position
            operations += sum(_dense_reads(plans[p], values[p]) for p in node.all_input_nodes)
        elif plan.mode in ("window", "local"):
            boxed = plan.shape[0] * plan.shape[1]
            positions += boxed
            operations += boxed * per_position + PER_NODE + _reads(node, plan, values)
    return Work(
        positions * windows,
        full_positions * windows,
        operations * windows,
        full_operations * windows,
    )


def _reads(node: fx.Node, plan: NodePlan, values: dict[fx.Node, Any]) -> int:
    """Values a box reads from its parents (a window's receptive slice, or its own box)."""
    if plan.window is not None:
        (parent,) = node.all_input_nodes
        rows = plan.window.rows.input_length(plan.shape[0])
        cols = plan.window.cols.input_length(plan.shape[1])
        return rows * cols * int(values[parent].shape[1])
    return sum(
        plan.shape[0] * plan.shape[1] * int(values[p].shape[1])
        for p in node.all_input_nodes
        if isinstance(values[p], torch.Tensor) and values[p].dim() == 4
    )


def _dense_reads(plan: NodePlan, value: Any) -> int:
    """Values copied when a node running in full reads a boxed parent."""
    if plan.mode not in ("input", "window", "local") or not isinstance(value, torch.Tensor):
        return 0
    return value[0].numel()
