"""Every method on CUDA: the CPU's results, batching invariance, float16 and bfloat16.

The model is the suite's seeded ResNet-18 (calibrated BatchNorm, 64x64 inputs,
``tests/zoo.py``); the CUDA model is an independent copy of the same weights.
Every test runs in the server's CUDA setting, exact float32 (TF32 off). The
device and the CPU still sum in other orders (cuDNN's algorithms, atomic adds
in backward kernels), so maps agree to ``MAP_ATOL`` and raw values to
``RAW_RTOL`` of their scale; path methods sum gradients at many points whose
ReLU decisions can flip with the last bit, so they get ``PATH_TOLERANCE``.
Every measured difference goes to the ``measured`` record (``gpu_tests.json``
of a ``bench/gpu_check.sh`` run), and docs/methods.md quotes it.
"""

from __future__ import annotations

import copy

import pytest
import torch

from camserve_server.methods import METHODS, BatchResult, explain
from camserve_server.models import ExplainableModel
from precision_tolerances import (
    CUDA_BFLOAT16_HEATMAP_TOLERANCE,
    CUDA_BFLOAT16_RAW_RELATIVE_TOLERANCE,
    CUDA_FLOAT32_METHODS_TOLERANCE,
    FLOAT32_METHODS,
    HEATMAP_TOLERANCE,
    RAW_RELATIVE_TOLERANCE,
)
from zoo import INPUT_SIZE, ZooModel, build_zoo_model

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("strict_float32")]

MAP_ATOL = 1e-3
RAW_RTOL = 1e-3
PATH_TOLERANCE = 2e-2  # integrated gradients: 9.2e-3 (map), 7.3e-3 (raw) on an H200
PATH_METHODS = frozenset({"integrated_gradients", "smoothgrad"})
OPTIONS: dict[str, dict[str, object]] = {
    "integrated_gradients": {"steps": 8},
    "smoothgrad": {"samples": 4},
    "occlusion": {"window": 16, "stride": 8},
}
# Methods whose heatmaps are per-channel pictures (feature maps, filters) or absent
# (channel profile, embedding): their raw values are compared instead.
RAW_ONLY = frozenset(RAW_RELATIVE_TOLERANCE)


@pytest.fixture(scope="module")
def zoo() -> ZooModel:
    return build_zoo_model("resnet18")


@pytest.fixture(scope="module")
def on_cuda(zoo: ZooModel, cuda: torch.device) -> ExplainableModel:
    module = copy.deepcopy(zoo.reference)
    return ExplainableModel(module, input_size=INPUT_SIZE, name="resnet18", device=cuda)


def _run(model: ExplainableModel, method: str, x: torch.Tensor) -> BatchResult:
    return explain(model, method, x.to(model.device), top_k=2, options=OPTIONS.get(method))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = float(a.abs().max().clamp_min(1e-12))
    return float((a - b.to(a.device)).abs().max()) / scale


def _largest(pairs: list[tuple[torch.Tensor | None, torch.Tensor | None]], raw: bool) -> float:
    """The largest difference over samples: relative for raw values, absolute for maps."""
    worst = 0.0
    for a, b in pairs:
        assert a is not None and b is not None
        a, b = a.float().cpu(), b.float().cpu()
        worst = max(worst, _relative(a, b) if raw else float((a - b).abs().max()))
    return worst


@pytest.mark.parametrize("method", sorted(METHODS))
def test_cuda_equals_the_cpu(
    zoo: ZooModel, on_cuda: ExplainableModel, method: str, measured: dict[str, float]
) -> None:
    on_cpu = _run(zoo.model, method, zoo.x)
    on_gpu = _run(on_cuda, method, zoo.x)
    pairs = list(zip(on_cpu.samples, on_gpu.samples, strict=True))
    for cpu, gpu in pairs:
        assert torch.equal(cpu.targets, gpu.targets.cpu())
        assert gpu.logits.device.type == on_cuda.device.type
    raw = _largest([(c.raw, g.raw) for c, g in pairs], raw=True)
    measured[f"cuda_vs_cpu/{method}/raw_relative"] = raw
    tolerance = PATH_TOLERANCE if method in PATH_METHODS else RAW_RTOL
    assert raw <= tolerance, (method, raw)
    if method in RAW_ONLY:
        return
    maps = _largest([(c.heatmaps, g.heatmaps) for c, g in pairs], raw=False)
    measured[f"cuda_vs_cpu/{method}/heatmap"] = maps
    assert maps <= (PATH_TOLERANCE if method in PATH_METHODS else MAP_ATOL), (method, maps)


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "saliency", "occlusion"])
def test_a_sample_in_a_batch_of_eight_equals_the_sample_alone_on_cuda(
    on_cuda: ExplainableModel, method: str, measured: dict[str, float]
) -> None:
    x = torch.randn(8, 3, *INPUT_SIZE, generator=torch.Generator().manual_seed(3))
    targets = [[i % 10] for i in range(8)]
    options = OPTIONS.get(method)
    batched = explain(on_cuda, method, x.to(on_cuda.device), targets=targets, options=options)
    pairs = []
    for i in range(8):
        alone = explain(
            on_cuda, method, x[i : i + 1].to(on_cuda.device), targets=[targets[i]], options=options
        )
        pairs.append((batched.samples[i].heatmaps, alone.samples[0].heatmaps))
    worst = _largest(pairs, raw=False)
    measured[f"batch_of_eight/{method}/heatmap"] = worst
    assert worst <= MAP_ATOL, (method, worst)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_reduced_precision_on_cuda_stays_within_tolerance(
    zoo: ZooModel,
    on_cuda: ExplainableModel,
    method: str,
    dtype: torch.dtype,
    measured: dict[str, float],
) -> None:
    reference = _run(on_cuda, method, zoo.x)
    with torch.autocast("cuda", dtype=dtype):
        reduced = _run(on_cuda, method, zoo.x)
    pairs = list(zip(reference.samples, reduced.samples, strict=True))
    for ref, got in pairs:
        assert got.logits.dtype == torch.float32
        assert torch.equal(ref.targets, got.targets)
    name = "float16" if dtype == torch.float16 else "bfloat16"
    if method in RAW_ONLY:
        worst = _largest([(r.raw, g.raw) for r, g in pairs], raw=True)
        table = (
            RAW_RELATIVE_TOLERANCE if name == "float16" else CUDA_BFLOAT16_RAW_RELATIVE_TOLERANCE
        )
    else:
        for _, got in pairs:
            assert got.heatmaps is not None and got.heatmaps.dtype == torch.float32
        worst = _largest([(r.heatmaps, g.heatmaps) for r, g in pairs], raw=False)
        table = HEATMAP_TOLERANCE if name == "float16" else CUDA_BFLOAT16_HEATMAP_TOLERANCE
    measured[f"{name}/{method}"] = worst
    limit = CUDA_FLOAT32_METHODS_TOLERANCE if method in FLOAT32_METHODS else table[method]
    assert worst <= limit, (method, name, worst)
