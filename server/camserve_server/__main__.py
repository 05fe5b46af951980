"""``camserve-server`` / ``python -m camserve_server``: run the service until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from prometheus_client import start_http_server

from .app import build_server, shutdown
from .config import Settings, parse_args
from .errors import CamserveError
from .processes import Supervisor


async def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Start the server and the metrics endpoint; drain gracefully on SIGTERM or SIGINT."""
    server, port, runtime = await build_server(settings, reuse_port=reuse_port)
    if settings.metrics_port >= 0:
        metrics_server, _ = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=runtime.metrics.registry
        )
        logging.info("metrics on %s:%d", settings.metrics_host, metrics_server.server_port)
    print(f"camserve serving on {settings.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.info("draining for up to %.0f s", settings.grace_period_s)
    await shutdown(server, runtime, settings.grace_period_s)


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
