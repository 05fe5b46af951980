"""Run a real camserve server in this process, on a real port, in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from camserve_server.app import Runtime, build_server, shutdown
from camserve_server.config import Settings, load_config_file

T = TypeVar("T")

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


def settings_for(config: Path | None = None, **overrides: Any) -> Settings:
    """Test settings: port 0 on loopback, no metrics endpoint, short batching delay."""
    base = Settings(host="127.0.0.1", port=0, metrics_port=-1, max_delay_ms=20.0)
    if config is not None:
        _, models = load_config_file(config)
        base = replace(base, models=models)
    return replace(base, **overrides)


class ServerThread:
    """A server on its own event loop in a daemon thread; ``start`` returns its port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0
        self.runtime: Runtime | None = None
        self._server: Any = None

    def start(self) -> int:
        self.thread.start()
        server, port, runtime = self.call(build_server(self.settings), timeout=300)
        self._server, self.port, self.runtime = server, port, runtime
        return port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def soon(self, function: Callable[[], T]) -> None:
        self.loop.call_soon_threadsafe(function)

    def stop(self, grace_s: float = 5.0) -> None:
        if self._server is not None and self.runtime is not None:
            self.call(shutdown(self._server, self.runtime, grace_s), timeout=grace_s + 30)
            self._server = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
