"""Shared fixtures: the reference-parity model zoo (built once per test run)."""

from __future__ import annotations

import pytest

from zoo import ZOO_LAYERS, ZooModel, build_zoo_model


@pytest.fixture(scope="session", params=list(ZOO_LAYERS))
def zoo_model(request: pytest.FixtureRequest) -> ZooModel:
    """Each of ResNet-18, VGG-11-BN, DenseNet-121 and MobileNetV3-Small in turn."""
    arch: str = request.param
    return build_zoo_model(arch)
