"""The benchmark harness runs end to end on tiny settings (its numbers are not checked)."""

from __future__ import annotations

import pytest
from bench_scripts import run_for_json


@pytest.mark.slow
def test_bench_quick_run_with_tensors_for_a_duration_reports_every_section() -> None:
    results = run_for_json(
        ["-m", "bench.run", "--quick", "--json", "--input", "tensor", "--duration", "2"],
        timeout_s=600,
    )
    assert set(results["ratios"]) >= {
        "gradcam_vs_forward",
        "gradcam_vs_forward_channels_last",
        "gradcam_vs_pytorch_grad_cam",
        "gradcam_vs_unbatched",
        "cache_warm_speedup",
        "cache_warm_speedup_tensor",
        "cache_warm_speedup_second_target",
        "frontend_noop_vs_gradcam_served",
        "frontend_warm_vs_gradcam_served",
        "cache_warm_speedup_second_target_tensor",
        "occlusion_vs_captum",
        "occlusion_incremental_vs_full_passes",
        "occlusion_onnxruntime_vs_captum",
        "onnxruntime_forward_vs_eager",
        "integrated_gradients_vs_captum",
        "gradcam_bfloat16_autocast_vs_float32",
        "gradcam_served_bfloat16_vs_float32",
    }
    assert all(value > 0 for value in results["ratios"].values())
    gradcam = results["gradcam"]
    assert (gradcam["input"], gradcam["mode"], gradcam["errors"]) == ("tensor", "duration", 0)
    assert gradcam["requests"] > 0 and gradcam["elapsed_s"] >= 2.0
    assert gradcam["batch_size"]["mean"] >= 1
    assert (
        results["gradcam_bfloat16"]["errors"] == 0 and results["gradcam_bfloat16"]["requests"] > 0
    )
    assert set(results["overhead"]) == set(results["cache"]) == {"jpeg", "tensor"}
    forward_only = results["forward_only"]
    assert set(forward_only) == {"scorecam at layer1", "ablationcam at layer4", "embed"}
    assert all(row["max_abs_diff"] < 1e-2 for row in forward_only.values())
    frontend = results["frontend"]
    assert frontend["noop_errors"] == frontend["warm_errors"] == 0
    assert frontend["warm_cache_hit_rate"] == 1.0
    assert results["onnxruntime"]["occlusion_max_abs_diff_vs_camserve"] < 1e-3
    assert results["precision"]["float32"]["engine_max_abs_diff"] < 1e-5
    budgets = {(row["method"], row["budget_mb"]) for row in results["memory"]}
    assert {("occlusion", 1024), ("occlusion", 256), ("integrated_gradients", 256)} <= budgets
    assert all(row["peak_mb"] > 0 and row["within_budget"] for row in results["memory"])
