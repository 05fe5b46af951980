"""Test settings and configs for in-process servers (``camserve_server.inprocess``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from camserve_server.config import Settings, load_config_file
from camserve_server.inprocess import ServerThread

__all__ = [
    "ServerThread",
    "settings_for",
    "write_demo_only_config",
    "write_r18_config",
    "write_test_config",
]

DEMO_TOML = """
[[models]]
name = "demo"
arch = "camserve_server.demo.model:build_demo_model"
weights = "{weights}"
input_size = [64, 64]
mean = {mean}
std = {std}
"""
TORCHVISION_TOML = """
[[models]]
name = "{name}"
arch = "{arch}"
num_classes = 10
input_size = [64, 64]
"""
R18_TOML = TORCHVISION_TOML.format(name="r18", arch="resnet18")
MNV3_TOML = TORCHVISION_TOML.format(name="mnv3", arch="mobilenet_v3_small")


def _demo_toml(*, labels: bool) -> str:
    """The demo model's entry, with its class names when ``labels``."""
    from camserve_server import demo

    entry = DEMO_TOML.format(
        weights=demo.WEIGHTS_PATH.as_posix(), mean=list(demo.MEAN), std=list(demo.STD)
    )
    if labels:
        entry += f'labels = "{demo.LABELS_PATH.as_posix()}"\n'
    return entry


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_test_config(folder: Path) -> Path:
    """A config serving the demo model and two small random-weight torchvision models."""
    return _write(folder / "models.toml", _demo_toml(labels=True) + R18_TOML + MNV3_TOML)


def write_demo_only_config(folder: Path) -> Path:
    """A config serving the demo model alone (fast to start: one small model)."""
    return _write(folder / "demo-only.toml", _demo_toml(labels=False))


def write_r18_config(folder: Path) -> Path:
    """A config serving one small random-weight ResNet-18, ``r18``, alone."""
    return _write(folder / "r18.toml", R18_TOML)


def settings_for(config: Path | None = None, **overrides: Any) -> Settings:
    """Test settings: port 0 on loopback, no metrics endpoint, short batching delay."""
    base = Settings(host="127.0.0.1", port=0, metrics_port=-1, max_delay_ms=20.0)
    if config is not None:
        _, models = load_config_file(config)
        base = replace(base, models=models)
    return replace(base, **overrides)
