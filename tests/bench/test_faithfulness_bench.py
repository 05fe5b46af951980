"""``python -m bench.faithfulness --quick`` runs end to end (its timings are not checked)."""

from __future__ import annotations

import pytest
from bench_scripts import run_for_json

pytest.importorskip("torchcam.metrics")


def test_faithfulness_bench_quick_run_reports_both_rates_their_ratio_and_equal_areas() -> None:
    results = run_for_json(["-m", "bench.faithfulness", "--quick", "--json"], timeout_s=600)
    assert results["images"] == 4 and results["steps"] == 8
    for section in ("camserve", "torchcam"):
        assert results[section]["images_per_s"] > 0
        assert results[section]["forward_inputs"] > 0
    assert results["ratio"] > 0
    assert results["max_abs_diff"] < 1e-4  # the same deletion and insertion areas
