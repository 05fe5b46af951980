"""Run a model up to (and through) a layer: capture its activation, or substitute it.

The backward pass of the CAM family stops at the layer: the layer's output is
detached into a leaf that requires grad, so autograd never builds a graph
before it, and parameters never need gradients. A cached activation skips the
backbone: only the head after the layer runs (``ExplainableModel.head``), or,
for a model that cannot be split, a full forward that substitutes it. A
forward-only graph has no hooks: it outputs the layer's activation itself.

Every method reads the layer as maps ``(N, K, h, w)``: the layer's output goes
through its ``LayerGrid`` here, once, and so does its gradient (a transformer's
tokens drop their prefix and fill the patch grid; a channels-last map is
permuted; pytorch-grad-cam's ``reshape_transform`` recipe). The leaf the backward
stops at, and what the cache keeps, is the layer's own output.

Under ``torch.autocast`` (the server's ``precision``) the backbone computes in
reduced precision, but what leaves a pass is float32: the captured activation
is upcast in the hook (so the leaf the backward stops at, its gradient and a
cached activation are float32, and a cache hit feeds the head exactly what a
miss does) and the logits are upcast after the forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidArgument
from ..models import ExplainableModel
from ..models.layer_grid import LayerGrid
from .base import BatchInput, Rows, resolve_targets


@contextmanager
def layer_hook(
    module: nn.Module, *, make_leaf: bool = False, substitute: torch.Tensor | None = None
) -> Iterator[list[torch.Tensor]]:
    """Capture (or replace) a module's output during one forward pass.

    Downstream layers receive a clone, so an in-place operation after the layer
    (an in-place ReLU) never alters the captured activation. The hook is removed
    on exit, also after an exception.
    """
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, _args: tuple[object, ...], out: object) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise InvalidArgument(f"the layer returns {type(out).__name__}, not a tensor")
        if captured:
            raise InvalidArgument(
                "the layer runs more than once in a forward pass; choose the block that contains it"
            )
        if substitute is not None:
            captured.append(substitute)
            return substitute.clone()
        activation = out.detach().float()  # float32 under autocast too: see module docstring
        if make_leaf:
            activation.requires_grad_(True)
        captured.append(activation)
        return activation.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def forward_with_layer(
    model: ExplainableModel, x: torch.Tensor, layer: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's activation and the logits of one forward pass (a hook, or a graph output)."""
    if model.graph is not None:
        return model.graph.forward_with_layer(x, layer)
    with layer_hook(model.submodule(layer)) as captured:
        logits = model.forward(x)
    return captured[0], logits


def _partition(batch: BatchInput) -> tuple[list[int], list[int]]:
    misses = [i for i, c in enumerate(batch.cached) if c is None]
    hits = [i for i, c in enumerate(batch.cached) if c is not None]
    return misses, hits


def _cached(batch: BatchInput, hits: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The hits' layer outputs (as the layer returns them) and logits, on the device."""
    assert batch.layer is not None
    entries = [batch.cached[i] for i in hits]
    stored = torch.stack([e.activation for e in entries if e is not None])
    logits = torch.stack([e.logits for e in entries if e is not None])
    device = batch.model.device
    grid = batch.model.structure.grid(batch.layer)
    output = grid.restored(stored) if grid is not None else stored
    return output.to(device), logits.to(device)


@dataclass
class LayerRead:
    """A layer's output for a batch as the layer returns it, its maps ``(N, K, h, w)``
    (``grid.maps``), and the logits ``(N, C)``."""

    output: torch.Tensor
    maps: torch.Tensor
    logits: torch.Tensor
    grid: LayerGrid

    @property
    def stored(self) -> torch.Tensor:
        """The output as the activation cache keeps it (``BatchResult.activations``)."""
        return self.grid.stored(self.output)


def layer_forward(batch: BatchInput) -> LayerRead:
    """The layer's output, its maps and the logits; cached rows cost nothing."""
    assert batch.layer is not None
    model = batch.model
    misses, hits = _partition(batch)
    with torch.inference_mode():
        parts: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []
        if misses:
            parts.append((misses, *forward_with_layer(model, batch.x[misses], batch.layer)))
        if hits:
            parts.append((hits, *_cached(batch, hits)))
        output, logits = _assemble(parts, len(batch.cached))
        grid = model.layer_grid(batch.layer, output)
        maps = grid.maps(output, batch.size)
    return LayerRead(output, maps, logits, grid)


Scores = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``scores(positions, targets)``: the target logit of each (pass row, class) pair, ``(M,)``,
differentiable back to the pass's leaf."""


def logit_scores(logits: torch.Tensor) -> Scores:
    """Scores read from full logits ``(N, C)`` of a pass."""
    return lambda positions, targets: logits[positions, targets]


@dataclass
class LayerGradients(LayerRead):
    """A ``LayerRead``, the resolved target rows and ``dy_c/dA`` ``(M, K, h, w)`` for each
    row, the gradient through the same grid as the maps."""

    rows: Rows
    gradients: torch.Tensor


@dataclass
class _Pass:
    """The rows of one pass (misses or hits), their leaf at the layer, logits and scores."""

    index: list[int]
    leaf: torch.Tensor
    logits: torch.Tensor
    scores: Scores


def layer_gradients(batch: BatchInput) -> LayerGradients:
    """One forward per sample (or a head pass for cached ones), one backward per target rank.

    Backward passes run from the logits to the layer only. Sample ``i`` with
    ``T_i`` targets needs ``T_i`` backward passes through the head, all sharing
    the single forward; samples are independent, so one backward serves a whole
    rank of the batch. A cached sample reuses its cached logits, and a head that
    ends in a linear classifier computes only the target logits (``LinearHead``).
    """
    assert batch.layer is not None
    model = batch.model
    misses, hits = _partition(batch)
    passes: list[_Pass] = []
    with torch.enable_grad():
        if misses:
            with layer_hook(model.submodule(batch.layer), make_leaf=True) as captured:
                out = model.forward(batch.x[misses])
            passes.append(_Pass(misses, captured[0], out.detach(), logit_scores(out)))
        if hits:
            activation, logits = _cached(batch, hits)  # a fresh stack: free to become the leaf
            leaf = activation.requires_grad_(True)
            passes.append(_Pass(hits, leaf, logits, _head_scores(batch, hits, leaf)))
    output, logits = _assemble(
        [(p.index, p.leaf.detach(), p.logits) for p in passes], len(batch.cached)
    )
    grid = model.layer_grid(batch.layer, output)
    maps = grid.maps(output, batch.size)
    rows = Rows.from_targets(resolve_targets(batch.targets, logits), model.device)
    gradients = torch.zeros(len(rows), *output.shape[1:], device=model.device)
    for p in passes:
        backward_by_rank(rows, p.index, p.leaf, p.scores, gradients)
    return LayerGradients(output, maps, logits, grid, rows, grid.maps(gradients, batch.size))


def _head_scores(batch: BatchInput, hits: list[int], leaf: torch.Tensor) -> Scores:
    """Target logits of cached rows, from ``leaf``: only the target rows of a linear
    classifier, else the whole head, else a full forward that substitutes ``leaf``.
    Called under ``layer_gradients``' ``enable_grad``."""
    assert batch.layer is not None
    linear = batch.model.linear_head(batch.layer)
    if linear is not None:
        features: torch.Tensor = linear.features(leaf.clone())
        return lambda positions, targets: linear.scores(features[positions].float(), targets)
    head = batch.model.head(batch.layer)
    if head is not None:
        return logit_scores(head(leaf.clone()).float())
    with layer_hook(batch.model.submodule(batch.layer), substitute=leaf):
        full: torch.Tensor = batch.model.module(batch.x[hits])
    return logit_scores(full.float())


def backward_by_rank(
    rows: Rows, idx: list[int], leaf: torch.Tensor, scores: Scores, gradients: torch.Tensor
) -> None:
    """``gradients[m] = dy_{c_m}/d leaf`` for the rows of one pass (samples ``idx``), one
    backward per target rank (one rank's rows all belong to different samples).

    The bookkeeping is a handful of Python integers, so it stays in Python lists: on a
    cached row the whole backward is a few small operations and every tensor op counts.
    """
    position_of = {sample: position for position, sample in enumerate(idx)}
    by_rank: dict[int, tuple[list[int], list[int], list[int]]] = {}
    for m, (sample, target, rank) in enumerate(
        zip(rows.sample.tolist(), rows.target.tolist(), rows.rank.tolist(), strict=True)
    ):
        if sample in position_of:
            selected, positions, targets = by_rank.setdefault(rank, ([], [], []))
            selected.append(m)
            positions.append(position_of[sample])
            targets.append(target)
    device = leaf.device
    last = max(by_rank, default=-1)
    for r in range(last + 1):
        selected, positions, targets = by_rank[r]
        at = torch.tensor(positions, device=device)
        score = scores(at, torch.tensor(targets, device=device)).sum()
        (grad,) = torch.autograd.grad(score, leaf, retain_graph=r < last)
        if grad.shape == gradients.shape and selected == positions == list(range(len(grad))):
            gradients.copy_(grad)  # the pass is the whole batch, in order
        else:
            gradients[torch.tensor(selected, device=device)] = grad[at]


def _assemble(
    parts: list[tuple[list[int], torch.Tensor, torch.Tensor]], n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if len(parts) == 1 and parts[0][0] == list(range(n)):
        return parts[0][1], parts[0][2]
    first_act, first_logits = parts[0][1], parts[0][2]
    activation = first_act.new_empty((n, *first_act.shape[1:]))
    logits = first_logits.new_empty((n, *first_logits.shape[1:]))
    for idx, act, out in parts:
        activation[idx] = act
        logits[idx] = out
    return activation, logits
