"""Gradients of target logits with respect to the input, for one or many inputs per sample."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from .base import BatchInput, BatchResult, Family, Method, Rows, package, resolve_targets
from .chunking import rows_per_pass, spans
from .heatmap import attribution_heatmaps
from .layer_pass import backward_by_rank, logit_scores

InputMaker = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def target_rows(batch: BatchInput) -> tuple[torch.Tensor, Rows]:
    """Logits of the unmodified inputs and the resolved target rows (forward only)."""
    with torch.inference_mode():
        logits = batch.model.forward(batch.x)
    return logits, Rows.from_targets(resolve_targets(batch.targets, logits), batch.model.device)


def input_gradients(batch: BatchInput) -> tuple[torch.Tensor, Rows, torch.Tensor]:
    """One forward, one backward per target rank: ``dy_c/dx`` for every row ``(M, 3, H, W)``."""
    x = batch.x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = batch.model.forward(x)
    rows = Rows.from_targets(resolve_targets(batch.targets, out.detach()), batch.model.device)
    gradients = torch.zeros(len(rows), *x.shape[1:], device=x.device)
    backward_by_rank(rows, list(range(x.shape[0])), x, logit_scores(out), gradients)
    return out.detach(), rows, gradients


def weighted_input_gradients(
    batch: BatchInput, rows: Rows, make_inputs: InputMaker, steps: int, weights: torch.Tensor
) -> torch.Tensor:
    """``sum_j weights[j] * dy_c/dx`` at ``make_inputs(sample, j)`` for every row.

    The ``N * steps`` inputs run in chunks sized to the memory budget; each chunk
    is one forward and one backward per target rank.
    """
    n = batch.x.shape[0]
    device = batch.x.device
    max_targets = max(rows.counts)
    table = torch.full((n, max_targets), -1, dtype=torch.long, device=device)
    table[rows.sample, rows.rank] = torch.arange(len(rows), device=device)
    weights = weights.to(device=device, dtype=torch.float32)
    total = torch.zeros(len(rows), *batch.x.shape[1:], device=device)
    chunk = rows_per_pass(batch.model, int(batch.options.get("batch_size", 0)), backward=True)
    for start, stop in spans(n * steps, chunk):
        pairs = torch.arange(start, stop, device=device)
        sample, step = pairs // steps, pairs % steps
        inputs = make_inputs(sample, step).detach().requires_grad_(True)
        with torch.enable_grad():
            out = batch.model.forward(inputs)
        ranks = max(rows.counts[i] for i in set(sample.tolist()))
        for r in range(ranks):
            row = table[sample, r]
            valid = torch.nonzero(row >= 0).flatten()
            grad_out = torch.zeros_like(out)
            grad_out[valid, rows.target[row[valid]]] = 1.0
            (grad,) = torch.autograd.grad(out, inputs, grad_out, retain_graph=r < ranks - 1)
            scaled = grad[valid] * weights[step[valid]].view(-1, 1, 1, 1)
            total.index_add_(0, row[valid], scaled)
    return total


class AttributionMethod(Method):
    """A method whose raw result is an input attribution ``(M, 3, H, W)``."""

    family: ClassVar[Family] = "gradient"
    # Gradients with respect to the pixels, through the whole network, in bfloat16 differ
    # from float32 by up to half the heatmap range: these methods stay in float32.
    mixed_precision = False

    def attributions(
        self, batch: BatchInput
    ) -> tuple[torch.Tensor, Rows, torch.Tensor, dict[str, torch.Tensor]]:
        """Return logits ``(N, C)``, the target rows, attributions and per-row metrics."""
        raise NotImplementedError

    def heatmaps(self, attribution: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return attribution_heatmaps(attribution)

    def run(self, batch: BatchInput) -> BatchResult:
        logits, rows, attribution, metrics = self.attributions(batch)
        heat, empty = self.heatmaps(attribution)
        samples = package(rows, logits, heat, attribution.detach(), empty, metrics)
        return self.result(batch, samples, logits=logits)
