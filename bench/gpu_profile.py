"""Where a served explanation's device time goes: the engine alone, and the copies out.

Three figures on the device, outside any server: the round trip of one tiny
device-to-host copy (each is a synchronisation), the engine's Grad-CAM on a
batch of 25 (the served mean) and integrated gradients on one image, each
synchronised; and a ``torch.profiler`` table of that Grad-CAM batch by CPU time,
written to ``profile.txt`` beside ``gpu.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from camserve_server.methods import explain
from camserve_server.methods.chunking import memory_budget
from camserve_server.models import ExplainableModel

from .run import baseline_model

BATCH = 25


def _synchronised_ms(device: torch.device, work: Callable[[], object], repeats: int = 5) -> float:
    work()  # warm-up
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / repeats * 1e3


def where_time_goes(device_name: str, arch: str, size: int, out: Path) -> dict[str, Any]:
    """The figures above, in milliseconds; the profiler table goes to ``out/profile.txt``."""
    device = torch.device(device_name)
    tiny = torch.ones(4, device=device)
    round_trip = _synchronised_ms(device, tiny.cpu, repeats=200)
    model = ExplainableModel(
        baseline_model(arch, device_name),
        input_size=(size, size),
        channels_last=True,
        memory_budget_bytes=memory_budget(0, device),  # the server's default
    )
    x = torch.randn(BATCH, 3, size, size, device=device)

    def gradcam() -> object:
        return explain(model, "gradcam", x, top_k=1)

    def integrated_gradients() -> object:
        return explain(model, "integrated_gradients", x[:1], top_k=1)

    figures = {
        "d2h_round_trip_ms": round_trip,
        f"engine_gradcam_batch{BATCH}_ms": _synchronised_ms(device, gradcam),
        "engine_integrated_gradients_one_image_ms": _synchronised_ms(device, integrated_gradients),
    }
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profile:
        gradcam()
        torch.cuda.synchronize(device)
    table = profile.key_averages().table(sort_by="cpu_time_total", row_limit=30)
    (out / "profile.txt").write_text(f"Grad-CAM, batch {BATCH}, {arch} at {size}\n{table}\n")
    return figures
