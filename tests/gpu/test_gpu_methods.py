"""Every method on CUDA: the CPU's results, batching invariance, float16 and bfloat16.

The model is the suite's seeded ResNet-18 (calibrated BatchNorm, 64x64 inputs,
``tests/zoo.py``); the CUDA model is an independent copy of the same weights.
Heatmaps are in [0, 1]; in strict float32 the device and the CPU sum in other
orders (cuDNN's convolution algorithms, atomics in the backward pass), so maps
agree to ``MAP_ATOL`` and raw values to ``RAW_RTOL`` of their scale.
"""

from __future__ import annotations

import copy

import pytest
import torch

from camserve_server.methods import METHODS, BatchResult, explain
from camserve_server.models import ExplainableModel
from precision_tolerances import FLOAT32_METHODS, HEATMAP_TOLERANCE, RAW_RELATIVE_TOLERANCE
from zoo import INPUT_SIZE, ZooModel, build_zoo_model

pytestmark = pytest.mark.gpu

MAP_ATOL = 1e-3
RAW_RTOL = 1e-3
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


@pytest.mark.usefixtures("strict_float32")
@pytest.mark.parametrize("method", sorted(METHODS))
def test_cuda_equals_the_cpu(zoo: ZooModel, on_cuda: ExplainableModel, method: str) -> None:
    on_cpu = _run(zoo.model, method, zoo.x)
    on_gpu = _run(on_cuda, method, zoo.x)
    for cpu, gpu in zip(on_cpu.samples, on_gpu.samples, strict=True):
        assert torch.equal(cpu.targets, gpu.targets.cpu())
        assert cpu.raw is not None and gpu.raw is not None
        assert gpu.raw.device.type == on_cuda.device.type
        assert _relative(cpu.raw, gpu.raw.cpu()) <= RAW_RTOL, method
        if method in RAW_ONLY or cpu.heatmaps is None:
            continue
        assert gpu.heatmaps is not None
        difference = float((cpu.heatmaps - gpu.heatmaps.cpu()).abs().max())
        assert difference <= MAP_ATOL, (method, difference)


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "saliency", "occlusion"])
def test_a_sample_in_a_batch_of_eight_equals_the_sample_alone_on_cuda(
    on_cuda: ExplainableModel, method: str
) -> None:
    x = torch.randn(8, 3, *INPUT_SIZE, generator=torch.Generator().manual_seed(3))
    targets = [[i % 10] for i in range(8)]
    batched = explain(on_cuda, method, x.to(on_cuda.device), targets=targets,
                      options=OPTIONS.get(method))  # fmt: skip
    for i in range(8):
        alone = explain(on_cuda, method, x[i : i + 1].to(on_cuda.device), targets=[targets[i]],
                        options=OPTIONS.get(method))  # fmt: skip
        a, b = batched.samples[i], alone.samples[0]
        assert a.heatmaps is not None and b.heatmaps is not None
        assert float((a.heatmaps - b.heatmaps).abs().max()) <= MAP_ATOL, (method, i)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_reduced_precision_on_cuda_stays_within_tolerance(
    zoo: ZooModel, on_cuda: ExplainableModel, method: str, dtype: torch.dtype
) -> None:
    reference = _run(on_cuda, method, zoo.x)
    with torch.autocast("cuda", dtype=dtype):
        reduced = _run(on_cuda, method, zoo.x)
    for ref, got in zip(reference.samples, reduced.samples, strict=True):
        assert got.logits.dtype == torch.float32
        assert torch.equal(ref.targets, got.targets)
        assert ref.raw is not None and got.raw is not None
        if method in RAW_ONLY:
            assert _relative(ref.raw, got.raw) <= RAW_RELATIVE_TOLERANCE[method], method
            continue
        assert ref.heatmaps is not None and got.heatmaps is not None
        assert got.heatmaps.dtype == torch.float32
        difference = float((ref.heatmaps - got.heatmaps).abs().max())
        limit = 1e-5 if method in FLOAT32_METHODS else HEATMAP_TOLERANCE[method]
        assert difference <= limit, (method, difference)
