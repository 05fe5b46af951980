"""The forward passes of the perturbed inputs: every family's inputs in one stream, cut
into chunks sized to the memory budget, forward only and in float32.

The chunks go through ``chunking.spans``: between two of them the device worker may hand
the device to waiting light batches, or stop the batch when nobody waits for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..methods.chunking import rows_per_pass, spans
from ..methods.precision import full_precision
from ..models import ExplainableModel
from .base import Perturbations


def run_passes(model: ExplainableModel, stream: Sequence[Perturbations]) -> int:
    """Run every input of ``stream`` through ``model`` and hand each family the softmax of
    its own; returns the number of inputs run."""
    sizes = [len(family) for family in stream]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    total = sum(sizes)
    with torch.inference_mode(), full_precision(model.device):
        for start, stop in spans(total, rows_per_pass(model)):
            pieces = [
                (family, max(start, first) - first, min(stop, first + size) - first)
                for family, first, size in zip(stream, starts, sizes, strict=True)
                if first < stop and start < first + size
            ]
            inputs = torch.cat([family.inputs(a, b) for family, a, b in pieces])
            probabilities = torch.softmax(model.forward(inputs).float(), dim=1)
            at = 0
            for family, a, b in pieces:
                family.take(a, b, probabilities[at : at + b - a])
                at += b - a
    return total
