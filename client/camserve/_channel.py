"""Channel settings shared by the blocking and asyncio clients.

Retries: only calls that fail with UNAVAILABLE are retried, by gRPC itself,
following the ``retryPolicy`` of the service config below (exponential backoff
with jitter). Auth: a bearer token travels as call credentials over TLS, or as
plain ``authorization`` metadata on an insecure channel.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import grpc

from camserve.errors import InvalidArgumentError

MIB: Final = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * MIB
SERVICES: Final = (
    "camserve.v1.ExplainService",
    "camserve.v1.VisualizeService",
    "camserve.v1.ImageSetService",
    "grpc.health.v1.Health",
)
MAX_ATTEMPTS_LIMIT: Final = 5  # gRPC caps retryPolicy.maxAttempts at 5

PemSource = bytes | str | os.PathLike[str]
"""PEM data as bytes, or the path of a PEM file."""


def _pem(value: PemSource | None, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    try:
        with open(value, "rb") as file:
            return file.read()
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {what} {os.fspath(value)!r}: {exc}") from None


@dataclass(frozen=True)
class ChannelConfig:
    """Everything that shapes a client's channel: address, security, limits, retries."""

    address: str
    timeout: float | None = 30.0
    tls: bool = False
    root_certificates: PemSource | None = None
    certificate_chain: PemSource | None = None
    private_key: PemSource | None = None
    token: str | None = None
    server_name: str | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    keepalive_s: float | None = 60.0
    max_attempts: int = MAX_ATTEMPTS_LIMIT
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    extra_options: Sequence[tuple[str, Any]] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.address:
            raise InvalidArgumentError("the server address is empty")
        if self.timeout is not None and not self.timeout > 0:
            raise InvalidArgumentError(f"timeout must be positive or None, got {self.timeout}")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise InvalidArgumentError(
                f"max_attempts must be in [1, {MAX_ATTEMPTS_LIMIT}], got {self.max_attempts}"
            )
        if self.max_message_bytes <= 0:
            raise InvalidArgumentError("max_message_bytes must be positive")
        if (self.certificate_chain is None) != (self.private_key is None):
            raise InvalidArgumentError("give certificate_chain and private_key together (mTLS)")
        if self.token is not None and (not self.token or "\n" in self.token):
            raise InvalidArgumentError("the token must be a non-empty single line")

    @property
    def secure(self) -> bool:
        """Whether the channel uses TLS (asked for, or implied by certificates)."""
        return self.tls or self.root_certificates is not None or self.certificate_chain is not None

    def service_config(self) -> str:
        """The gRPC service config (JSON): retry UNAVAILABLE with exponential backoff."""
        method: dict[str, Any] = {"name": [{"service": name} for name in SERVICES]}
        if self.max_attempts > 1:
            method["retryPolicy"] = {
                "maxAttempts": self.max_attempts,
                "initialBackoff": f"{self.initial_backoff_s:g}s",
                "maxBackoff": f"{self.max_backoff_s:g}s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            }
        return json.dumps({"methodConfig": [method]})

    def options(self) -> list[tuple[str, Any]]:
        """Channel arguments: message caps, retries, keepalive, then ``extra_options``."""
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.enable_retries", 1 if self.max_attempts > 1 else 0),
            ("grpc.service_config", self.service_config()),
        ]
        if self.keepalive_s is not None:
            options += [
                ("grpc.keepalive_time_ms", int(self.keepalive_s * 1000)),
                ("grpc.keepalive_timeout_ms", 20_000),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        if self.server_name is not None:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        options.extend(self.extra_options)
        return options

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials (with the token as call credentials), or None for plaintext."""
        if not self.secure:
            return None
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_pem(self.root_certificates, "root certificates"),
            private_key=_pem(self.private_key, "private key"),
            certificate_chain=_pem(self.certificate_chain, "certificate chain"),
        )
        if self.token is None:
            return credentials
        return grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(self.token)
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Per-call metadata: the bearer token on an insecure channel, else nothing."""
        if self.token is None or self.secure:
            return ()
        return (("authorization", f"Bearer {self.token}"),)

    def resolve_timeout(self, timeout: float | None) -> float | None:
        """A call's deadline in seconds: its own ``timeout``, else the client's."""
        if timeout is None:
            return self.timeout
        if not timeout > 0:
            raise InvalidArgumentError(f"timeout must be positive, got {timeout}")
        return timeout


def open_channel(config: ChannelConfig) -> grpc.Channel:
    """A blocking channel for ``config``."""
    credentials = config.credentials()
    if credentials is None:
        return grpc.insecure_channel(config.address, options=config.options())
    return grpc.secure_channel(config.address, credentials, options=config.options())


def open_aio_channel(config: ChannelConfig) -> grpc.aio.Channel:
    """An asyncio channel for ``config``; create it inside the event loop that uses it."""
    credentials = config.credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(config.address, options=config.options())
    return grpc.aio.secure_channel(config.address, credentials, options=config.options())


__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "ChannelConfig", "open_aio_channel", "open_channel"]
