"""``camserve-server`` / ``python -m camserve_server``: run the service until SIGTERM.

A server that cannot start says why in one line and exits 2: every reason it knows
(a port in use, a model that cannot be built, a bad setting) is a ``CamserveError``,
which ``main`` prints as ``camserve-server: ...``, never as a traceback. Both ports
are claimed before the models load, which can take minutes, and ``serving on`` is
printed only once the gRPC server, the metrics endpoint and every model are up.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server

from .app import build_server, shutdown
from .config import Settings, parse_args
from .errors import CamserveError, FailedPrecondition
from .processes import Supervisor

_TAKEN = (errno.EADDRINUSE, errno.EACCES)


def check_port_free(host: str, port: int, flag: str) -> None:
    """``FailedPrecondition`` when another process holds ``host:port``, before models load.

    A trial bind, with ``SO_REUSEADDR`` as gRPC binds, on each address ``host`` names.
    Only an address in use or forbidden counts, so a host without IPv6 is not refused
    for ``localhost``'s ``::1``. gRPC's own bind would fail too, but only after the
    models load, and with a C-level log line of its own.
    """
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise _cannot_listen(host, port, flag, exc) from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as trial:
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                trial.bind(address)
            except OSError as exc:
                if exc.errno in _TAKEN:
                    raise _cannot_listen(host, port, flag, exc) from None


def _cannot_listen(host: str, port: int, flag: str, exc: OSError) -> FailedPrecondition:
    return FailedPrecondition(f"cannot listen on {host}:{port} ({flag}): {exc.strerror or exc}")


def start_metrics(settings: Settings, registry: CollectorRegistry) -> WSGIServer | None:
    """The Prometheus endpoint on ``--metrics-port`` serving ``registry``; None when off.

    A port that cannot be bound is ``FailedPrecondition``, so it stops start-up in one line.
    """
    if settings.metrics_port < 0:
        return None
    host, port = settings.metrics_host, settings.metrics_port
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise FailedPrecondition(
            f"cannot serve metrics on {host}:{port} (--metrics-port): {exc.strerror or exc}"
        ) from None
    logging.info("metrics on %s:%d", host, server.server_port)
    return server


def _stop_metrics(server: WSGIServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()


async def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Start the metrics endpoint and the server; drain gracefully on SIGTERM or SIGINT.

    The metrics endpoint binds first and answers with no samples until the models are
    loaded, so a port in use fails start-up at once rather than after the models load
    and the gRPC server listens. ``reuse_port``: a supervisor's process, whose gRPC port
    the supervisor holds.
    """
    if not reuse_port:
        check_port_free(settings.host, settings.port, "--port")
    metrics = start_metrics(settings, CollectorRegistry())
    try:
        server, port, runtime = await build_server(settings, reuse_port=reuse_port)
    except BaseException:
        _stop_metrics(metrics)
        raise
    if metrics is not None:
        metrics.set_app(make_wsgi_app(runtime.metrics.registry))
    print(f"camserve serving on {settings.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.info("draining for up to %.0f s", settings.grace_period_s)
    await shutdown(server, runtime, settings.grace_period_s)
    _stop_metrics(metrics)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``camserve-server`` console script."""
    try:
        settings = parse_args(argv)
    except CamserveError as exc:
        print(f"camserve-server: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if settings.processes != 1:
            return Supervisor(settings).run()
        asyncio.run(serve(settings))
    except CamserveError as exc:
        print(f"camserve-server: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
