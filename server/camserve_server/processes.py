"""Several server processes on one gRPC port, for devices one Python process cannot feed.

One Python process tops out at a few thousand small RPCs a second, below what a
GPU can explain. With ``--processes N`` a supervisor reserves the port with
``SO_REUSEPORT`` and starts N server processes that bind it too, as gRPC's
multiprocessing example does; the kernel spreads new connections across them.
Each process loads its own models and device workers (N copies in device
memory) and batches its own callers. They share the activation cache and image
sets only through Redis, so ``redis_url`` is required. Metrics of every process
are summed on the supervisor's one endpoint (Prometheus multiprocess mode).
SIGTERM drains every process; if one dies, the supervisor stops the rest and
exits non-zero so that the orchestrator restarts the whole pod; if the
supervisor itself is killed, Linux sends each process SIGTERM. A process that
cannot start (weights that do not load, say) tells the supervisor why, and the
supervisor says it once, as one start-up failure, rather than N tracebacks.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from multiprocessing.process import BaseProcess
from multiprocessing.queues import SimpleQueue
from pathlib import Path
from types import FrameType

from .config import Settings
from .errors import CamserveError, InvalidArgument

log = logging.getLogger(__name__)

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
POLL_S = 0.2
PR_SET_PDEATHSIG = 1  # linux/prctl.h
START_FAILED = 2  # a process's exit code when it could not start: its reason is on the queue


def check_processes(settings: Settings) -> None:
    """Refuse a process count the server cannot honour, before anything starts."""
    if settings.processes < 1:
        raise InvalidArgument(f"processes must be at least 1, got {settings.processes}")
    if settings.processes > 1 and not settings.redis_url:
        raise InvalidArgument(
            "several processes share the activation cache and image sets only through Redis: "
            "give --redis-url, or run one process"
        )
    if settings.processes > 1 and not hasattr(socket, "SO_REUSEPORT"):
        raise InvalidArgument("several processes on one port need SO_REUSEPORT (Linux, BSD)")


@contextlib.contextmanager
def reserved_port(host: str, port: int) -> Iterator[int]:
    """Hold ``host:port`` (0: a free port) with ``SO_REUSEPORT`` while the servers bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InvalidArgument(f"cannot bind {host}:{port}: {exc.strerror}") from None
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def _serve_one(settings: Settings, supervisor: int, failures: SimpleQueue[str]) -> None:
    """A child process: one whole server on the shared port; its metrics go to the files.

    Why it could not start goes to ``failures`` for the supervisor to report once."""
    import asyncio

    from .__main__ import serve

    _stop_with_parent(supervisor)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(settings, reuse_port=True))
    except CamserveError as exc:
        failures.put(str(exc))
        sys.exit(START_FAILED)


def _stop_with_parent(supervisor: int) -> None:
    """Ask Linux for SIGTERM when the supervisor dies, even by SIGKILL: no orphan keeps
    serving the port. Elsewhere this is skipped."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """Starts the server processes, forwards SIGTERM/SIGINT, and notices a death."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.children: list[BaseProcess] = []
        self.stopping = False
        self.failure: str | None = None  # why a process could not start

    def run(self) -> int:
        """Serve until signalled (0) or until a process dies (1).

        A process that could not start raises its reason as a ``CamserveError``, as a
        single server would."""
        check_processes(self.settings)
        own_dir = METRICS_DIR_ENV not in os.environ
        if own_dir:
            os.environ[METRICS_DIR_ENV] = tempfile.mkdtemp(prefix="camserve-metrics-")
        metrics_dir = os.environ[METRICS_DIR_ENV]
        for stale in Path(metrics_dir).glob("*.db"):  # a previous run's values
            stale.unlink()
        try:
            with reserved_port(self.settings.host, self.settings.port) as port:
                code = self._serve(port, metrics_dir)
        finally:
            if own_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)
                del os.environ[METRICS_DIR_ENV]
        if self.failure is not None:
            raise CamserveError(self.failure)
        return code

    def _serve(self, port: int, metrics_dir: str) -> int:
        child = replace(self.settings, port=port, processes=1, metrics_port=-1)
        context = multiprocessing.get_context("spawn")  # never fork a process that ran gRPC
        self._start_metrics(metrics_dir)  # before any process: a port in use stops here
        failures: SimpleQueue[str] = context.SimpleQueue()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(self.settings.processes):
                if self.stopping:
                    break
                process = context.Process(
                    target=_serve_one,
                    args=(child, os.getpid(), failures),
                    name=f"camserve-{index}",
                )
                process.start()
                self.children.append(process)
            host = self.settings.host
            print(
                f"camserve supervising {len(self.children)} processes on {host}:{port}", flush=True
            )
            return self._watch(metrics_dir, failures)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            failures.close()

    def _start_metrics(self, metrics_dir: str) -> None:
        """The one metrics endpoint, summing every process's files; it reads them per scrape,
        so it starts before the processes do."""
        if self.settings.metrics_port < 0:
            return
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        from .__main__ import start_metrics

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
        start_metrics(self.settings, registry)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for process in self.children:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    def _watch(self, metrics_dir: str, failures: SimpleQueue[str]) -> int:
        from prometheus_client import multiprocess

        code = 0
        while any(process.is_alive() for process in self.children):
            for process in self.children:
                if process.exitcode is not None and not self.stopping:
                    if failures.empty():  # else a start-up failure, which ``run`` reports
                        log.error(
                            "%s exited with %s: stopping the others",
                            process.name,
                            process.exitcode,
                        )
                    code = 1
                    self._on_signal(signal.SIGTERM, None)
            time.sleep(POLL_S)
        for process in self.children:
            process.join()
            if process.pid is not None:
                multiprocess.mark_process_dead(process.pid, metrics_dir)  # type: ignore[no-untyped-call]
            if process.exitcode not in (0, None) and not self.stopping:
                code = 1
        if not failures.empty():
            self.failure = failures.get()
        return code
