"""``python -m camserve_server.healthcheck``: exit 0 when the local server answers SERVING.

For container health checks (Docker ``HEALTHCHECK``, Kubernetes ``exec`` probes
where the built-in gRPC probe cannot be used, e.g. with TLS). It reads the
server's own settings (``CAMSERVE_*`` variables and the config file) to find
the port and whether TLS is on, asks the standard ``grpc.health.v1`` service,
and exits 0 (SERVING) or 1 (anything else), with one line on stderr. It imports
neither torch nor the engine, so a probe costs a fraction of a second.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .config import Settings, parse_args

WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


def local_address(settings: Settings) -> str:
    """Where this container's server listens, seen from inside the container."""
    host = "127.0.0.1" if settings.host in WILDCARD_HOSTS else settings.host
    return f"{host}:{settings.port}"


def _channel(
    address: str, settings: Settings, ca: str | None, server_name: str | None
) -> grpc.Channel:
    if not settings.tls_enabled:
        return grpc.insecure_channel(address)
    assert settings.tls_cert and settings.tls_key
    root = Path(ca or settings.tls_client_ca or settings.tls_cert).read_bytes()
    key = cert = None
    if settings.tls_client_ca:  # mutual TLS: present the server's own certificate
        key, cert = Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes()
    credentials = grpc.ssl_channel_credentials(root, key, cert)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(address, credentials, options=options)


def check(
    settings: Settings,
    service: str = "",
    timeout_s: float = 3.0,
    address: str | None = None,
    ca: str | None = None,
    server_name: str | None = None,
) -> tuple[bool, str]:
    """Ask the health service; ``(serving, what it said)``."""
    target = address or local_address(settings)
    with _channel(target, settings, ca, server_name) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            return False, f"{target}: {exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{target}: {status}"


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    environ = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="python -m camserve_server.healthcheck")
    parser.add_argument("--service", default="", help="health service name ('' = the server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for a reply")
    parser.add_argument("--address", help="host:port (default: the port in the settings)")
    parser.add_argument(
        "--tls-ca",
        default=environ.get("CAMSERVE_HEALTHCHECK_CA"),
        help="PEM bundle that signed the server certificate (env CAMSERVE_HEALTHCHECK_CA)",
    )
    parser.add_argument(
        "--server-name",
        default=environ.get("CAMSERVE_HEALTHCHECK_SERVER_NAME"),
        help="a name in the server certificate (env CAMSERVE_HEALTHCHECK_SERVER_NAME)",
    )
    args = parser.parse_args(argv)
    try:
        settings = parse_args([], env=environ)
        serving, said = check(
            settings, args.service, args.timeout, args.address, args.tls_ca, args.server_name
        )
    except (OSError, ValueError) as exc:
        serving, said = False, f"cannot check: {exc}"
    print(said, file=sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
