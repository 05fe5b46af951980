"""``python -m bench.occlusion_incremental --quick`` runs end to end (timings not checked)."""

from __future__ import annotations

from bench_scripts import run_for_json


def test_quick_run_reports_three_timings_and_equal_maps() -> None:
    results = run_for_json(["-m", "bench.occlusion_incremental", "--quick", "--json"], 600)
    (row,) = results["rows"]
    assert row["incremental_ran"] and row["full_variant"] == "occlusion"
    for key in ("captum_s", "full_s", "incremental_s"):
        assert row[key] > 0
    assert row["rel_diff_vs_full"] <= 1e-4
    assert row["rel_diff_vs_captum"] <= 1e-4
