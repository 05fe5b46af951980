"""Run a real camserve server inside this process, on a real port, in a background thread.

For tests, benchmarks and notebooks: the server is the same as ``camserve-server``
(same ``build_server``), its runtime (models, metrics registry) reachable directly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .app import Runtime, build_server, shutdown
from .config import Settings

T = TypeVar("T")


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
        """Build and start the server (models loaded and warmed up); return its port."""
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

    def stop(self, grace_s: float = 5.0) -> None:
        """Drain gracefully, then stop the loop."""
        if self._server is not None and self.runtime is not None:
            self.call(shutdown(self._server, self.runtime, grace_s), timeout=grace_s + 30)
            self._server = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
