"""``bench/gpu_check.sh --cpu-smoke``: the GPU suite's code paths run on the CPU, so the
suite never rots between GPU machines (its numbers are not checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "device", "gradcam_rps", "forward_ips", "pgc_rps", "occlusion_vs_captum", "ig_vs_captum",
    "frontend_noop_rps", "processes", "precision", "parity_max_diff", "cache", "gpu_util",
    "peak_memory_bytes", "targets", "sections_s",
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.redis
def test_the_gpu_suite_runs_on_the_cpu_and_leaves_every_figure(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    done = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--cpu-smoke"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert {p.name for p in tmp_path.iterdir()} >= {"gpu.json", "gpu.md", "pytest.log", "bench.log"}
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert set(results) >= KEYS
    assert "errors" not in results, results.get("errors")
    for kind in ("jpeg", "tensor"):
        load = results["gradcam_rps"][kind]
        assert load["answered"] > 0 and load["errors"] == 0
    assert [entry["n"] for entry in results["processes"]] == [1, 2]
    # --processes 2 needs the redis-server the script starts (make test installs one)
    assert all(entry.get("gradcam_rps", 0) > 0 for entry in results["processes"])
    assert results["precision"]["bfloat16"]["max_diff"] < 0.05
    assert "| served Grad-CAM, JPEG |" in (tmp_path / "gpu.md").read_text()
