"""Shared fixtures: the reference-parity model zoo (built once per test run), and for the
GPU tests (``tests/gpu``, skipped where no CUDA device is present) the device, the
server's exact-float32 setting and a record of the differences they measure."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from camserve_server.runtime.precision import exact_float32_on_cuda
from zoo import ZOO_LAYERS, ZooModel, build_zoo_model


@pytest.fixture(scope="session", params=list(ZOO_LAYERS))
def zoo_model(request: pytest.FixtureRequest) -> ZooModel:
    """Each of ResNet-18, VGG-11-BN, DenseNet-121 and MobileNetV3-Small in turn."""
    arch: str = request.param
    return build_zoo_model(arch)


@pytest.fixture(scope="session")
def cuda() -> torch.device:
    """The first CUDA device; the test is skipped without one."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda:0")


@pytest.fixture
def strict_float32() -> Iterator[None]:
    """The server's CUDA setting for the test (TF32 off: ``exact_float32_on_cuda``), the
    process's flags restored after it."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    exact_float32_on_cuda()
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="session")
def measured() -> Iterator[dict[str, float]]:
    """Differences the GPU tests measure, by test; written as JSON to ``$GPU_TEST_FIGURES``
    at the end of the run when it is set (``bench/gpu_check.sh`` sets it)."""
    figures: dict[str, float] = {}
    yield figures
    path = os.environ.get("GPU_TEST_FIGURES")
    if path and figures:
        Path(path).write_text(json.dumps(figures, indent=1, sort_keys=True))
