"""The model as a ``torch.fx`` graph, and running its nodes one at a time."""

from __future__ import annotations

import logging
import operator
import weakref
from typing import Any

import torch
from torch import fx, nn

log = logging.getLogger(__name__)

_traced: weakref.WeakKeyDictionary[nn.Module, fx.GraphModule | None] = weakref.WeakKeyDictionary()


def traced(module: nn.Module) -> fx.GraphModule | None:
    """``module`` traced with ``torch.fx`` (once per module), or None when it does not trace."""
    if module not in _traced:
        try:
            _traced[module] = fx.symbolic_trace(module)
        except Exception as exc:  # fx cannot trace every Python construct
            log.info("incremental occlusion: the model does not trace (%s)", exc)
            _traced[module] = None
    return _traced[module]


def call_node(graph: fx.GraphModule, node: fx.Node, values: dict[fx.Node, Any]) -> Any:
    """Run ``node`` on ``values`` of its inputs, as the traced module's forward does."""
    args = fx.node.map_arg(node.args, lambda n: values[n])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: values[n])
    if node.op == "call_module":
        return graph.get_submodule(str(node.target))(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)  # type: ignore[operator]
    if node.op == "call_method":
        receiver, *rest = args
        return getattr(receiver, str(node.target))(*rest, **kwargs)
    if node.op == "get_attr":
        value: Any = graph
        for part in str(node.target).split("."):
            value = getattr(value, part)
        return value
    raise ValueError(f"cannot run a {node.op} node")


def cloned(value: Any) -> Any:
    """A tensor's copy, so an in-place operation leaves the original intact."""
    return value.clone() if isinstance(value, torch.Tensor) else value


def activations(graph: fx.GraphModule, x: torch.Tensor) -> dict[fx.Node, Any]:
    """Every node's output for the input ``x``, none overwritten by a later in-place op."""
    values: dict[fx.Node, Any] = {}
    for node in graph.graph.nodes:
        if node.op == "placeholder":
            values[node] = x
        elif node.op == "output":
            values[node] = values[node.args[0]] if isinstance(node.args[0], fx.Node) else None
        else:
            inputs = {parent: cloned(values[parent]) for parent in node.all_input_nodes}
            values[node] = call_node(graph, node, inputs)
    return values


IN_PLACE_FUNCTIONS: frozenset[Any] = frozenset({operator.iadd, operator.imul, operator.isub})


def writes_inputs(graph: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` may overwrite an input: an ``inplace`` module or keyword, a
    trailing-underscore method, an augmented assignment."""
    if node.op == "call_module":
        return bool(getattr(graph.get_submodule(str(node.target)), "inplace", False))
    if node.op == "call_method":
        return str(node.target).endswith("_")
    return node.target in IN_PLACE_FUNCTIONS or bool(node.kwargs.get("inplace", False))
