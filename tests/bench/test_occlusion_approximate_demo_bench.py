"""``python -m bench.occlusion_approximate_demo`` runs end to end and reports each share."""

from __future__ import annotations

from bench_scripts import run_for_json

from camserve_server.methods.occlusion import APPROXIMATE_VARIANT


def test_demo_run_reports_agreement_ranges_per_share() -> None:
    args = ["-m", "bench.occlusion_approximate_demo", "--projective-field", "0.6", "--json"]
    results = run_for_json(args, 600)
    assert results["samples"] == 6
    row = results["rows"]["0.6"]
    assert row["variant"] == APPROXIMATE_VARIANT
    low, high = row["rank_correlation"]
    assert 0.9 <= low <= high <= 1
    assert row["estimated_speedup"] > results["rows"]["exact"]["estimated_speedup"]
