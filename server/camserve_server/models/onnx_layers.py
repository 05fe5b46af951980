"""The layers of an exported ONNX graph, named as in the eager model, and where it splits.

``torch.onnx.export`` names every node after the module calls around it:
``/layer4/layer4.1/relu_1/Relu``. Each scope is an attribute name, with the
numbered path below the last named attribute kept (``block1.0`` inside
``features.block1``; ``relu_1`` is the second call of ``relu``), so the full
module name is rebuilt scope by scope (``layer4.1``, ``features.block1.0``).
A module's output is the output of its last node in topological order.

Two kinds of scope are left out, so that a listed name always means what it
means on the eager model: a module called more than once (``relu`` and
``relu_1``: the eager hook refuses it too), and a convolution whose weight is
no longer its own parameter (the exporter folded the following batch norm into
it, so its output is the normalised one). Any graph tensor can still be named
directly.

The default layer follows ``inspection.inspect_model``: the last 4-D output
with ``h*w > 1``, outermost module first, skipping an averaging or global pool
that feeds the classifier through reshapes only (the eager model skips its
adaptive pool by type, which the graph no longer records).

The graph splits at a tensor when every path from the input to the logits
passes through it: the head (the nodes the logits need, walking back and
stopping at the tensor) then never reads the input, and becomes a graph of its
own whose input is the tensor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx
from onnx import helper

_POOLS_BEFORE_HEAD = {"GlobalAveragePool", "GlobalMaxPool", "AveragePool"}
_RESHAPES = {"Flatten", "Reshape", "Squeeze", "Identity"}
_LINEAR = {"Gemm", "MatMul"}
_CONVOLUTIONS = {"Conv", "ConvTranspose"}
_SUBGRAPHS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
_REPEATED_CALL = re.compile(r"^(.+)_(\d+)$")


@dataclass(frozen=True)
class GraphLayer:
    """A module of the exported model: the tensor it outputs, its op and its shape at batch 1."""

    name: str
    tensor: str
    kind: str
    shape: tuple[int, ...]
    order: int


def graph_layers(
    graph: onnx.GraphProto, shapes: dict[str, tuple[int, ...]]
) -> dict[str, GraphLayer]:
    """Module name -> its output, for every module scope whose output shape is known."""
    last: dict[str, int] = {}
    repeated: set[str] = set()
    folded: set[str] = set()
    weights = {t.name for t in graph.initializer}
    for index, node in enumerate(graph.node):
        scopes = _module_names(node.name)
        for name in scopes:
            last[name] = index
        if scopes and node.op_type in _CONVOLUTIONS and len(node.input) > 1:
            weight = node.input[1]
            if weight in weights and weight != f"{scopes[-1]}.weight":
                folded.add(scopes[-1])
    for name in last:
        parent, _, leaf = name.rpartition(".")
        match = _REPEATED_CALL.match(leaf)
        if match and (f"{parent}.{match[1]}" if parent else match[1]) in last:
            repeated |= {name, f"{parent}.{match[1]}" if parent else match[1]}
    layers = {}
    for name, index in last.items():
        if name in folded or any(_within(name, r) for r in repeated):
            continue
        node = graph.node[index]
        tensor = node.output[0]
        if tensor in shapes:
            layers[name] = GraphLayer(name, tensor, node.op_type, shapes[tensor], index)
    return layers


def _module_names(node_name: str) -> list[str]:
    """The full module names of a node's scopes, outermost first ([] for unscoped nodes)."""
    if not node_name.startswith("/"):
        return []
    scopes = node_name.strip("/").split("/")[:-1]
    names: list[str] = []
    for scope in scopes:
        if not scope:
            return []
        parent = names[-1] if names else ""
        tail = _tail(parent)
        if tail and scope.startswith(tail + "."):
            names.append(parent + scope[len(tail) :])
        else:
            names.append(f"{parent}.{scope}" if parent else scope)
    return names


def _tail(name: str) -> str:
    """The part of a module name from its last non-numeric atom on (``seq.0`` of ``a.seq.0``)."""
    atoms = name.split(".") if name else []
    for start in range(len(atoms) - 1, -1, -1):
        if not atoms[start].isdigit():
            return ".".join(atoms[start:])
    return name


def _within(name: str, scope: str) -> bool:
    return name == scope or name.startswith(scope + ".")


def default_graph_layer(graph: onnx.GraphProto, layers: dict[str, GraphLayer]) -> str:
    """The eager rule on the graph: the last spatial output, outermost module first ('' if none)."""
    consumers = _consumers(graph)
    candidates = [
        layer
        for layer in layers.values()
        if len(layer.shape) == 4
        and layer.shape[-1] * layer.shape[-2] > 1
        and not (layer.kind in _POOLS_BEFORE_HEAD and _feeds_linear(layer.tensor, consumers))
    ]
    if not candidates:
        return ""
    last = max(candidates, key=lambda layer: layer.order)
    same = [layer for layer in candidates if layer.tensor == last.tensor]
    return min(same, key=lambda layer: (layer.name.count("."), len(layer.name))).name


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _feeds_linear(tensor: str, consumers: dict[str, list[onnx.NodeProto]]) -> bool:
    """Whether ``tensor`` reaches a Gemm/MatMul through reshapes only (a pool before the head)."""
    frontier = [tensor]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.op_type in _LINEAR:
                return True
            if node.op_type in _RESHAPES:
                frontier.append(node.output[0])
    return False


def head_nodes(graph: onnx.GraphProto, tensor: str, logits: str) -> list[onnx.NodeProto] | None:
    """The nodes computing ``logits`` from ``tensor`` alone, in graph order; None if none do.

    None when the logits do not depend on ``tensor``, when some path from a graph
    input reaches the logits without passing through it (a skip connection around
    it), or when a needed node carries a subgraph (its outer reads are not tracked).
    """
    producers = {out: index for index, node in enumerate(graph.node) for out in node.output}
    inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    needed: set[int] = set()
    reached = False
    stack = [logits]
    seen = {logits}
    while stack:
        name = stack.pop()
        if name == tensor:
            reached = True
            continue
        if name in inputs:
            return None  # the head would read the input: no clean split here
        index = producers.get(name)
        if index is None or index in needed:
            continue
        node = graph.node[index]
        if any(a.type in _SUBGRAPHS for a in node.attribute):
            return None
        needed.add(index)
        for parent in node.input:
            if parent and parent not in seen:
                seen.add(parent)
                stack.append(parent)
    if not reached:
        return None
    return [graph.node[i] for i in sorted(needed)]


def head_model(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], tensor: str, logits: str
) -> onnx.ModelProto:
    """A model of ``nodes`` alone: input ``tensor`` (float), output ``logits``, their weights."""
    used = {name for node in nodes for name in node.input}
    graph = model.graph
    initializers = [t for t in graph.initializer if t.name in used]
    output = next(o for o in graph.output if o.name == logits)
    head_graph = helper.make_graph(
        list(nodes),
        f"{graph.name or 'graph'}_head",
        [helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None)],
        [output],
        initializer=initializers,
    )
    head = helper.make_model(head_graph, opset_imports=list(model.opset_import))
    head.ir_version = model.ir_version
    head.functions.extend(model.functions)
    return head


def with_outputs(
    model: onnx.ModelProto, names: list[str], types: dict[str, int]
) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``names`` (their types from ``types``, else float)."""
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    present = {o.name for o in extended.graph.output}
    for name in names:
        if name not in present:
            extended.graph.output.append(
                helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None)
            )
    return extended


def known_shapes(inferred: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Every tensor whose shape inference gave all dimensions, at batch 1."""
    shapes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        sizes = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims)
        if sizes and min(sizes) > 0:
            shapes[value.name] = sizes
    return shapes
