"""Test settings and configs for in-process servers (``camserve_server.inprocess``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from camserve_server.config import Settings, load_config_file
from camserve_server.inprocess import ServerThread

__all__ = ["ServerThread", "settings_for", "write_demo_only_config", "write_test_config"]

TEST_MODELS_TOML = """
[[models]]
name = "demo"
arch = "camserve_server.demo.model:build_demo_model"
weights = "{demo_weights}"
input_size = [64, 64]
mean = {demo_mean}
std = {demo_std}
labels = "{demo_labels}"

[[models]]
name = "r18"
arch = "resnet18"
num_classes = 10
input_size = [64, 64]

[[models]]
name = "mnv3"
arch = "mobilenet_v3_small"
num_classes = 10
input_size = [64, 64]
"""


def write_test_config(folder: Path) -> Path:
    """A config serving the demo model and two small random-weight torchvision models."""
    from camserve_server import demo

    path = folder / "models.toml"
    path.write_text(
        TEST_MODELS_TOML.format(
            demo_weights=demo.WEIGHTS_PATH.as_posix(),
            demo_labels=demo.LABELS_PATH.as_posix(),
            demo_mean=list(demo.MEAN),
            demo_std=list(demo.STD),
        )
    )
    return path


DEMO_ONLY_TOML = """
[[models]]
name = "demo"
arch = "camserve_server.demo.model:build_demo_model"
weights = "{weights}"
input_size = [64, 64]
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
"""


def write_demo_only_config(folder: Path) -> Path:
    """A config serving the demo model alone (fast to start: one small model)."""
    from camserve_server import demo

    path = folder / "demo-only.toml"
    path.write_text(DEMO_ONLY_TOML.format(weights=demo.WEIGHTS_PATH.as_posix()))
    return path


def settings_for(config: Path | None = None, **overrides: Any) -> Settings:
    """Test settings: port 0 on loopback, no metrics endpoint, short batching delay."""
    base = Settings(host="127.0.0.1", port=0, metrics_port=-1, max_delay_ms=20.0)
    if config is not None:
        _, models = load_config_file(config)
        base = replace(base, models=models)
    return replace(base, **overrides)
