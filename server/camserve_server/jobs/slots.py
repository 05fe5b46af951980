"""Admission of long jobs: at most ``max_jobs`` optimisation jobs and evaluations at once.

Beyond the limit a job is refused at once with RESOURCE_EXHAUSTED (``Overloaded``): a
refused caller retries later, and the server never holds an unbounded queue of long
jobs. Every admitted job is released with how it ended, which the jobs counter records.
"""

from __future__ import annotations

from ..errors import Overloaded
from ..runtime.metrics import Metrics


class JobSlots:
    """Counts running jobs against the limit; ``kind`` labels a job in the metrics (the
    job method's id, or "evaluate")."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = max(1, limit)
        self.metrics = metrics
        self.running = 0

    def acquire(self, model: str, kind: str) -> None:
        """Admit one job, or refuse it with ``Overloaded``."""
        if self.running >= self.limit:
            self.metrics.jobs.labels(model, kind, "refused").inc()
            raise Overloaded(
                f"{self.running} jobs are running, the server's limit "
                f"(--max-jobs {self.limit}); retry later"
            )
        self.running += 1
        self.metrics.jobs_running.set(self.running)

    def release(self, model: str, kind: str, outcome: str) -> None:
        """One admitted job ended: "ok", "cancelled" or "error"."""
        self.running -= 1
        self.metrics.jobs_running.set(self.running)
        self.metrics.jobs.labels(model, kind, outcome).inc()
