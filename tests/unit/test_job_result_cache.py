"""The job result cache: least recently used out first, within its byte budget."""

from __future__ import annotations

import numpy as np

from camserve_server.jobs.result_cache import FinishedJob, ResultCache, job_key


def finished(value: float, side: int = 8) -> FinishedJob:
    return FinishedJob(
        tensor=np.full((3, side, side), value, np.float32),
        images={},
        trace=(1.0, 0.5),
        logits=np.zeros(6, np.float32),
    )


def test_keys_depend_on_every_part_and_not_on_their_order() -> None:
    parts = {"model": "demo", "seed": 0, "options": (("steps", 8),)}
    assert job_key(parts) == job_key(dict(reversed(list(parts.items()))))
    assert job_key(parts) != job_key({**parts, "seed": 1})
    assert job_key(parts) != job_key({**parts, "options": (("steps", 9),)})


def test_the_least_recently_used_entry_leaves_first() -> None:
    size = finished(0).nbytes
    cache = ResultCache(max_bytes=2 * size)
    cache.put("a", finished(1))
    cache.put("b", finished(2))
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", finished(3))
    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None
    assert len(cache) == 2


def test_a_value_larger_than_the_budget_is_not_kept() -> None:
    cache = ResultCache(max_bytes=finished(0).nbytes - 1)
    cache.put("a", finished(1))
    assert cache.get("a") is None
    assert len(cache) == 0
