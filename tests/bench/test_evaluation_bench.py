"""``python -m bench.evaluation --quick`` runs end to end against a real server."""

from __future__ import annotations

from bench_scripts import run_for_json


def test_evaluation_bench_quick_run_reports_every_method_and_the_random_maps() -> None:
    results = run_for_json(["-m", "bench.evaluation", "--quick", "--json"], timeout_s=600)
    assert results["images"] == 4 and results["maps"] == 4 * 2 * 6
    assert set(results) >= {"gradcam", "saliency", "random"}
    assert "sanity" in results["gradcam"] and "sanity" not in results["random"]
    assert 0.0 <= results["gradcam"]["pointing_game"] <= 1.0
