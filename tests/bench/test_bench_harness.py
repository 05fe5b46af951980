"""The benchmark harness runs end to end on tiny settings (its numbers are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_quick_run_reports_every_ratio() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    results = json.loads(done.stdout[done.stdout.index("{") :])
    assert set(results["ratios"]) == {
        "gradcam_vs_forward",
        "gradcam_vs_forward_channels_last",
        "gradcam_vs_pytorch_grad_cam",
        "gradcam_vs_unbatched",
        "cache_warm_speedup",
        "occlusion_vs_captum",
        "integrated_gradients_vs_captum",
    }
    assert all(value > 0 for value in results["ratios"].values())
    assert results["gradcam"]["errors"] == 0
    assert results["gradcam"]["batch_size"]["mean"] >= 1
