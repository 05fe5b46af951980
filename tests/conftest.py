"""Shared fixtures: the reference-parity model zoo (built once per test run), and the CUDA
device of the GPU tests (``tests/gpu``, skipped where no CUDA device is present)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

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
    """TF32 off for the test, restored after it: device-against-CPU parity is checked in
    float32, so a difference is the engine's, not TF32's 10-bit mantissa (torch's CUDA
    default for convolutions)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
