"""Split a model at a layer into the part after it (the head), derived with torch.fx.

A cached activation of layer L lets the server skip everything before L: only
``head(A)`` runs. The head is cut out of the model's own traced graph, so the
split works for any architecture fx can trace, not one family. When the graph
cannot be cut cleanly (the part after L also reads tensors computed before L,
e.g. a skip connection around L, or the model does not trace), ``build_head``
returns ``None`` and callers fall back to a full forward that substitutes A at L.
A forward's other arguments with defaults (timm ViT's ``attn_mask``) stay arguments
of the head, with the same defaults.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import fx, nn

log = logging.getLogger(__name__)


class _LayerAsLeafTracer(fx.Tracer):
    """Traces through every module except ``layer`` (kept as one call node)."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name == self.layer:
            return True
        if self.layer.startswith(module_qualified_name + "."):
            return False  # an ancestor of the layer must be traced through
        return super().is_leaf_module(m, module_qualified_name)


def build_head(model: nn.Module, layer: str) -> fx.GraphModule | None:
    """Return a module computing logits from the activation of ``layer``, or None."""
    try:
        tracer = _LayerAsLeafTracer(layer)
        graph = tracer.trace(model)
    except Exception as exc:  # fx cannot trace every Python construct
        log.info("no head split for layer %s: trace failed (%s)", layer, exc)
        return None
    layer_nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if len(layer_nodes) != 1:
        return None  # not called, or called more than once: no single cut point
    cut = layer_nodes[0]
    output = next(n for n in graph.nodes if n.op == "output")

    needed = _ancestors(output)
    after_cut = _descendants(cut)
    image, *arguments = (n for n in graph.nodes if n.op == "placeholder")
    head_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut: head_graph.placeholder("activation")}
    for argument in arguments:
        if argument.args:  # a default value: the head takes the argument, with that default
            env[argument] = head_graph.placeholder(
                str(argument.target), default_value=argument.args[0]
            )
    for node in graph.nodes:
        if node not in needed or node is cut or node.op in ("output", "placeholder"):
            continue
        if node not in after_cut:
            if _reads(node, image) or any(p not in env for p in node.all_input_nodes):
                continue  # computed before the cut; only a problem if the head reads it
        elif any(parent not in env for parent in node.all_input_nodes):
            return None  # the head reads a tensor computed before the cut (a skip connection)
        env[node] = head_graph.node_copy(node, lambda n: env[n])
    head_graph.output(env[output.args[0]])
    head = fx.GraphModule(model, head_graph)
    head.graph.eliminate_dead_code()
    head.recompile()
    head.eval()
    return head


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        for parent in current.all_input_nodes:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _descendants(node: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        for child in current.users:
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def _reads(node: fx.Node, source: fx.Node) -> bool:
    """Whether ``node`` is ``source`` or computed from it."""
    return node is source or source in _ancestors(node)


def head_matches(
    head: fx.GraphModule, model: nn.Module, layer_output: torch.Tensor, logits: torch.Tensor
) -> bool:
    """Check a head against the full model on one recorded activation."""
    del model
    with torch.inference_mode():
        out = head(layer_output.clone())
    if not isinstance(out, torch.Tensor) or out.shape != logits.shape:
        return False
    scale = float(logits.abs().max().clamp_min(1.0))
    return bool((out - logits).abs().max() <= 1e-4 * scale)


@dataclass(frozen=True)
class LinearHead:
    """A head that ends in a linear classifier: ``y = W f(A) + b`` with ``f = features``.

    One logit's gradient needs only its row of ``W``: ``scores`` reads ``T`` rows of
    ``W`` instead of all ``C`` (ResNet-50: 8 MB read twice per cache hit otherwise).
    ``dy_c/dA`` is the same as through the full head: the backward of a one-hot row
    through ``W`` is that row.
    """

    features: fx.GraphModule
    weight: torch.Tensor
    bias: torch.Tensor | None

    def scores(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``y_t = W_t . f + b_t`` for each row of ``features`` ``(M, F)`` and its target."""
        out = (features * self.weight[targets]).sum(dim=1)
        return out + self.bias[targets] if self.bias is not None else out


def split_linear(head: fx.GraphModule) -> LinearHead | None:
    """The head as features plus its final ``nn.Linear``, or None if it ends otherwise."""
    output = next(n for n in head.graph.nodes if n.op == "output")
    last = output.args[0]
    if not isinstance(last, fx.Node) or last.op != "call_module" or len(last.users) != 1:
        return None
    linear = head.get_submodule(str(last.target))
    if type(linear) is not nn.Linear or len(last.args) != 1 or last.kwargs:
        return None
    (features_node,) = last.args
    if not isinstance(features_node, fx.Node):
        return None
    graph = copy.deepcopy(head.graph)
    nodes = {n.name: n for n in graph.nodes}
    graph_output = next(n for n in graph.nodes if n.op == "output")
    graph_output.args = (nodes[features_node.name],)
    graph.erase_node(nodes[last.name])
    features = fx.GraphModule(head, graph)
    features.graph.eliminate_dead_code()
    features.recompile()
    features.eval()
    return LinearHead(features=features, weight=linear.weight, bias=linear.bias)


def linear_head_matches(split: LinearHead, head: fx.GraphModule, activation: torch.Tensor) -> bool:
    """Check a split against the whole head on one activation: 2-D features, same logits."""
    with torch.inference_mode():
        features = split.features(activation.clone())
        logits = head(activation.clone())
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        return False
    if features.shape[1] != split.weight.shape[1] or logits.shape[0] != features.shape[0]:
        return False
    rows = torch.arange(logits.shape[1], device=logits.device)
    split_logits = torch.stack([split.scores(f.expand(len(rows), -1), rows) for f in features])
    scale = float(logits.abs().max().clamp_min(1.0))
    return bool((split_logits - logits).abs().max() <= 1e-4 * scale)
