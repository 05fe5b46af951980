"""Size the batches of perturbed inputs to an option and the model's memory budget,
and give the device up between chunks when lighter work is waiting."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch

from ..models import ExplainableModel

MAX_ROWS_PER_PASS = 256
CPU_BUDGET_BYTES = 1 << 30
GPU_BUDGET_SHARE = 8  # an eighth of a GPU's memory


def memory_budget(configured_bytes: int, device: torch.device) -> int:
    """The bytes one batch may use on ``device``: ``configured_bytes`` when positive, else
    1 GiB on a CPU and an eighth of a GPU's memory (17.5 GiB on an H200), so that a GPU's
    perturbation and path chunks are large enough to keep it busy."""
    if configured_bytes > 0:
        return configured_bytes
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory // GPU_BUDGET_SHARE)
    return CPU_BUDGET_BYTES


_local = threading.local()


def rows_per_pass(model: ExplainableModel, requested: int = 0, *, backward: bool = False) -> int:
    """Rows one forward (and backward) may carry: ``requested`` if set, capped by the budget.

    The per-row cost is the sum of the model's layer outputs for one sample
    (measured at load), tripled when a backward pass keeps them alive.
    """
    per_row = max(1, model.structure.activation_bytes * (3 if backward else 1))
    by_budget = max(1, model.memory_budget_bytes // per_row)
    limit = min(by_budget, MAX_ROWS_PER_PASS)
    return max(1, min(requested, limit) if requested > 0 else limit)


@contextlib.contextmanager
def between_chunks(gate: Callable[[], object]) -> Iterator[None]:
    """Call ``gate`` between two chunks of every ``spans`` loop run by this thread.

    The device worker passes a gate that hands the device to waiting
    explanation batches, so a heavy request is interleaved chunk by chunk.
    """
    previous = getattr(_local, "gate", None)
    _local.gate = gate
    try:
        yield
    finally:
        _local.gate = previous


def spans(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of at most ``size`` covering ``range(total)``."""
    for start in range(0, total, size):
        if start > 0:
            gate = getattr(_local, "gate", None)
            if gate is not None:
                gate()
        yield start, min(total, start + size)
