"""Peak memory of one method's batch, each measured in a fresh process.

On a CPU, what torch allocates is not visible to ``tracemalloc``; the honest
figure is the process's resident memory. A fresh interpreter per (method,
budget) loads the model, returns freed heap to the kernel (``malloc_trim``),
notes its resident set, resets the kernel's peak (``/proc/self/clear_refs``,
``5``), runs the engine's ``explain`` once and reads the new peak (``VmHWM``):
the difference is what that batch needed on top of the loaded model. No
allocator cache carries over from another method or from the model's load.

Perturbation methods (occlusion, Score-CAM, Ablation-CAM, integrated gradients,
SmoothGrad) size their chunks to ``memory_budget_mb`` (``methods/chunking.py``),
so each is measured under two budgets.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import resource
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PERTURBATION_METHODS = (
    "occlusion",
    "scorecam",
    "ablationcam",
    "integrated_gradients",
    "smoothgrad",
)


@dataclass(frozen=True)
class MemoryCase:
    """One method as the memory section runs it: layer (empty: default) and options."""

    method: str
    layer: str = ""
    options: dict[str, float] = field(default_factory=dict)
    batch: int = 1


def _status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{name} is not in /proc/self/status")


def _trim_heap() -> None:
    """Hand memory the allocator holds free back to the kernel (glibc ``malloc_trim``), so
    the batch cannot reuse pages the model load left resident and look smaller."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak() -> bool:
    """Reset the peak resident set to the current one; False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(arch: str, size: int, case: MemoryCase, budget_mb: int) -> dict[str, Any]:
    """In this process: load ``arch``, run ``case`` once, return its peak memory (MiB)."""
    import torch
    import torchvision

    from camserve_server.methods import get_method
    from camserve_server.methods.chunking import rows_per_pass
    from camserve_server.methods.engine import explain
    from camserve_server.models import ExplainableModel

    torch.manual_seed(0)  # the same random weights the server builds
    model = ExplainableModel(
        torchvision.models.get_model(arch, weights=None),
        input_size=(size, size),
        memory_budget_bytes=budget_mb << 20,
        channels_last=True,  # the server's default
    )
    x = torch.randn(case.batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    method = get_method(case.method)
    backward = method.needs_gradients
    gc.collect()
    _trim_heap()
    before_kib = _status_kib("VmRSS")
    reset = _reset_peak()
    explain(model, case.method, x, layer=case.layer or None, options=case.options)
    peak_kib = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "method": case.method,
        "layer": (case.layer or model.default_layer) if method.uses_layer else "",
        "batch": case.batch,
        "budget_mb": budget_mb,
        "rows_per_pass": rows_per_pass(model, 0, backward=backward)
        if case.method in PERTURBATION_METHODS
        else None,  # the batch itself: not chunked
        "estimated_row_mb": model.structure.activation_bytes * (3 if backward else 1) / 2**20,
        "peak_mb": (peak_kib - before_kib) / 1024,
        "peak_measure": "VmHWM after clear_refs" if reset else "ru_maxrss (includes model load)",
    }


def measure_in_subprocess(
    arch: str, size: int, case: MemoryCase, budget_mb: int, threads: int
) -> dict[str, Any]:
    """``measure`` in a fresh interpreter, so no other run's allocations are counted."""
    command = [
        sys.executable, "-m", "bench.memory", "--arch", arch, "--size", str(size),
        "--method", case.method, "--layer", case.layer, "--batch", str(case.batch),
        "--options", json.dumps(case.options), "--budget-mb", str(budget_mb),
        "--threads", str(threads),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory run of {case.method} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["within_budget"] = result["peak_mb"] <= budget_mb
    return result


def peak_memory(
    arch: str,
    size: int,
    cases: list[MemoryCase],
    budgets_mb: list[int],
    threads: int,
) -> list[dict[str, Any]]:
    """Every perturbation case under every budget; other cases under the first budget only."""
    rows = []
    for case in cases:
        chunked = case.method in PERTURBATION_METHODS
        for budget in budgets_mb if chunked else budgets_mb[:1]:
            rows.append(measure_in_subprocess(arch, size, case, budget, threads))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="peak memory of one method (one process)")
    parser.add_argument("--arch", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--layer", default="")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--options", default="{}")
    parser.add_argument("--budget-mb", type=int, required=True)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    case = MemoryCase(args.method, args.layer, json.loads(args.options), args.batch)
    print(json.dumps(measure(args.arch, args.size, case, args.budget_mb)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
