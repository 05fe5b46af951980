"""Which nodes an occluded copy recomputes in a box, and which in full.

A node is recomputed in a box when it is a local operator whose output at a position
depends on a bounded neighbourhood of its inputs (convolution, max/average pooling:
the receptive field; batch norm in eval, pointwise activations, residual additions and
concatenation along channels: the same position) and its box covers at most
``FULL_SHARE`` of its positions. Any other node (global pooling, linear layers,
flattening, an unknown operator) and every node after one runs in full.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import fx, nn

from .regions import Reach, fixed_boxes, through_window, truncated, union

FULL_SHARE = 0.7  # a larger box runs in full (0.6: 3-5% slower on ResNet-18 at 224)

Mode = Literal["input", "constant", "unchanged", "window", "local", "full"]

POINTWISE_MODULES = (
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)
POINTWISE_FUNCTIONS: frozenset[Any] = frozenset(
    {
        F.relu,
        F.relu6,
        F.leaky_relu,
        F.gelu,
        F.silu,
        F.hardswish,
        F.hardsigmoid,
        F.dropout,
        torch.relu,
        torch.sigmoid,
        torch.tanh,
        operator.add,
        operator.iadd,
        operator.mul,
        operator.sub,
        torch.add,
        torch.mul,
    }
)
POINTWISE_METHODS = frozenset({"relu", "relu_", "sigmoid", "tanh", "contiguous"})


@dataclass(frozen=True)
class WindowOp:
    """A convolution or pooling, applied without padding to a slice padded with ``fill``."""

    rows: Reach
    cols: Reach
    fill: float
    module: nn.Module

    def apply(self, patch: torch.Tensor) -> torch.Tensor:
        m = self.module
        stride = (self.rows.stride, self.cols.stride)
        if isinstance(m, nn.Conv2d):
            dilation = (self.rows.dilation, self.cols.dilation)
            return F.conv2d(patch, m.weight, m.bias, stride, 0, dilation, m.groups)
        kernel = (self.rows.kernel, self.cols.kernel)
        if isinstance(m, nn.MaxPool2d):
            return F.max_pool2d(patch, kernel, stride, 0, (self.rows.dilation, self.cols.dilation))
        return F.avg_pool2d(patch, kernel, stride, 0)


@dataclass
class NodePlan:
    """How one node is computed for a chunk of occluded copies: ``input``, ``window`` and
    ``local`` in a box of ``shape`` at each window's ``corners`` ``(W, 2)``; ``constant``
    (no path from the input) and ``unchanged`` (no window reaches it) as for the original
    image. ``cut``: a projective-field threshold shrank some window's region here."""

    mode: Mode
    regions: torch.Tensor | None = None
    shape: tuple[int, int] = (0, 0)
    corners: torch.Tensor | None = None
    window: WindowOp | None = None
    cut: bool = False


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, tuple | list) else (int(value),) * 2


def window_op(module: nn.Module) -> WindowOp | None:
    """The geometry of a zero-padded convolution, a max pooling or an average pooling
    counting its padding, or None for any other module (or variant of these)."""
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            return None
        parts: tuple[Any, ...] = (
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
        )
        fill = 0.0
    elif isinstance(module, nn.MaxPool2d):
        if module.ceil_mode or module.return_indices:
            return None
        parts = (module.kernel_size, module.stride, module.padding, module.dilation)
        fill = float("-inf")
    elif isinstance(module, nn.AvgPool2d):
        if module.ceil_mode or module.divisor_override is not None:
            return None
        if not module.count_include_pad and _pair(module.padding) != (0, 0):
            return None
        parts = (module.kernel_size, module.stride, module.padding, 1)
        fill = 0.0
    else:
        return None
    k, s, p, d = (_pair(part) for part in parts)
    return WindowOp(Reach(k[0], s[0], p[0], d[0]), Reach(k[1], s[1], p[1], d[1]), fill, module)


def _is_local(graph: fx.GraphModule, node: fx.Node, values: dict[fx.Node, Any]) -> bool:
    """A position of the output depends on that position of each input only."""
    if node.op == "call_module":
        module = graph.get_submodule(str(node.target))
        if not isinstance(module, POINTWISE_MODULES) or module.training:
            return False
    elif node.op == "call_function":
        if node.target is torch.cat:
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            if dim not in (1, -3):
                return False
        elif node.target not in POINTWISE_FUNCTIONS:
            return False
    elif node.op != "call_method" or node.target not in POINTWISE_METHODS:
        return False
    out = values[node]
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        return False
    parents = node.all_input_nodes
    if node.target is torch.cat:
        listed = node.args[0]
        parents = (
            [p for p in listed if isinstance(p, fx.Node)]
            if isinstance(listed, list | tuple)
            else []
        )
        if not isinstance(listed, list | tuple) or len(parents) != len(listed):
            return False
    return all(
        isinstance(values[p], torch.Tensor)
        and values[p].dim() == 4
        and values[p].shape[0] == 1
        and values[p].shape[-2:] == out.shape[-2:]
        for p in parents
    )


def plan_nodes(
    graph: fx.GraphModule,
    values: dict[fx.Node, Any],
    input_regions: torch.Tensor,
    projective_field: float = 1.0,
) -> dict[fx.Node, NodePlan]:
    """Each node's plan, from the original image's activations ``values`` and the
    windows' regions in the input ``(W, 4)``. ``projective_field`` below 1 caps every
    changed region at that share of its layer's side (``truncated``): not exact."""
    plans: dict[fx.Node, NodePlan] = {}
    for node in graph.graph.nodes:
        if node.op == "placeholder":
            size = (int(values[node].shape[-2]), int(values[node].shape[-1]))
            shape, corners = fixed_boxes(input_regions, size)
            plans[node] = NodePlan("input", input_regions, shape, corners)
            continue
        if node.op == "output":
            continue
        parents = [plans[p] for p in node.all_input_nodes]
        if all(p.mode == "constant" for p in parents):
            plans[node] = NodePlan("constant")  # does not depend on the input
            continue
        changed = [p for p in parents if p.mode not in ("constant", "unchanged")]
        if not changed:
            plans[node] = NodePlan("unchanged")
            continue
        if any(p.mode == "full" for p in changed):
            plans[node] = NodePlan("full")
            continue
        out = values[node]
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            plans[node] = NodePlan("full")
            continue
        size = (int(out.shape[-2]), int(out.shape[-1]))
        op = window_op(graph.get_submodule(str(node.target))) if node.op == "call_module" else None
        if op is not None and len(node.all_input_nodes) == 1:
            regions = through_window(changed[0].regions, op.rows, op.cols, size)  # type: ignore[arg-type]
            mode: Mode = "window"
        elif _is_local(graph, node, values):
            regions = union([p.regions for p in changed])  # type: ignore[misc]
            mode = "local"
        else:
            plans[node] = NodePlan("full")
            continue
        cut = False
        if projective_field < 1:
            capped = truncated(regions, projective_field, size)
            cut, regions = bool((capped != regions).any()), capped
        shape, corners = fixed_boxes(regions, size)
        if shape[0] * shape[1] == 0:
            plans[node] = NodePlan("unchanged")
        elif shape[0] * shape[1] > FULL_SHARE * size[0] * size[1]:
            plans[node] = NodePlan("full")
        else:
            plans[node] = NodePlan(mode, regions, shape, corners, op, cut)
    return plans
