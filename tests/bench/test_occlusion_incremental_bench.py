"""``python -m bench.occlusion_incremental --quick`` runs end to end (timings not checked)."""

from __future__ import annotations

from bench_scripts import run_for_json

from camserve_server.methods.occlusion import APPROXIMATE_VARIANT, INCREMENTAL_VARIANT


def test_quick_run_reports_every_path_and_how_close_the_maps_are() -> None:
    results = run_for_json(["-m", "bench.occlusion_incremental", "--quick", "--json"], 600)
    (row,) = results["rows"]
    variants = row["variants"]
    assert variants["full"] == "occlusion" and variants["incremental"] == INCREMENTAL_VARIANT
    assert variants["approximate 0.4"] == APPROXIMATE_VARIANT
    for name in ("captum", "full", "incremental", "approximate 0.4", "approximate 0.6"):
        assert row["seconds"][name] > 0
    assert row["rel_diff_vs_full"] <= 1e-4
    assert row["rel_diff_vs_captum"] <= 1e-4
    assert row["estimated_speedup"] > 1
    cut = row["approximate"]["0.4"]
    assert -1 <= cut["rank_correlation"] <= 1 and 0 <= cut["top10_overlap"] <= 1
    assert cut["estimated_speedup"] > row["estimated_speedup"]
