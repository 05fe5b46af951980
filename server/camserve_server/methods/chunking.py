"""Size the batches of perturbed inputs to an option and the model's memory budget,
and give the device up between chunks when lighter work is waiting."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from ..models import ExplainableModel

MAX_ROWS_PER_PASS = 256

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
