"""``python -m bench.vit --quick`` runs end to end (its timings are not checked)."""

from __future__ import annotations

from bench_scripts import run_for_json


def test_vit_bench_quick_run_reports_both_rates_their_ratio_and_equal_maps() -> None:
    results = run_for_json(["-m", "bench.vit", "--quick", "--json"], timeout_s=600)
    assert results["model"]["layer"] == results["pytorch_grad_cam"]["layer"]
    assert results["camserve"]["errors"] == 0
    assert results["camserve"]["requests"] == results["images"] > 0
    for section in ("camserve", "camserve_sequential", "pytorch_grad_cam"):
        assert results[section]["images_per_s"] > 0
    assert results["ratio"] > 0 and results["ratio_sequential"] > 0
    assert results["max_abs_diff"] < 1e-3  # the same Grad-CAM maps
