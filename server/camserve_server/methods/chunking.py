"""Size the batches of perturbed inputs to an option and the model's memory budget."""

from __future__ import annotations

from collections.abc import Iterator

from ..models import ExplainableModel

MAX_ROWS_PER_PASS = 256


def rows_per_pass(model: ExplainableModel, requested: int = 0, *, backward: bool = False) -> int:
    """Rows one forward (and backward) may carry: ``requested`` if set, capped by the budget.

    The per-row cost is the sum of the model's layer outputs for one sample
    (measured at load), tripled when a backward pass keeps them alive.
    """
    per_row = max(1, model.structure.activation_bytes * (3 if backward else 1))
    by_budget = max(1, model.memory_budget_bytes // per_row)
    limit = min(by_budget, MAX_ROWS_PER_PASS)
    return max(1, min(requested, limit) if requested > 0 else limit)


def spans(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of at most ``size`` covering ``range(total)``."""
    for start in range(0, total, size):
        yield start, min(total, start + size)
