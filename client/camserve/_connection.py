"""What both clients hold: the channel's settings, the channel, and a stub per service.

``ExplainClient`` and ``AsyncExplainClient`` are ``Connection`` subclasses that differ
in the channel they open (blocking or ``grpc.aio``) and in how they wait for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from camserve import _health
from camserve._channel import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_ATTEMPTS_LIMIT,
    ChannelConfig,
    PemSource,
)
from camserve.v1 import evaluate_pb2_grpc, explain_pb2_grpc, imagesets_pb2_grpc, jobs_pb2_grpc

ChannelT = TypeVar("ChannelT", grpc.Channel, grpc.aio.Channel)


@dataclass(frozen=True)
class Stubs:
    """One channel's stubs, one per service, and the standard health check."""

    explain: explain_pb2_grpc.ExplainServiceStub
    jobs: jobs_pb2_grpc.VisualizeServiceStub
    sets: imagesets_pb2_grpc.ImageSetServiceStub
    evaluate: evaluate_pb2_grpc.EvaluateServiceStub
    health: Any  # grpc.health.v1.Health/Check, with the messages coded by camserve._health

    @classmethod
    def on(cls, channel: grpc.Channel | grpc.aio.Channel) -> Stubs:
        """The stubs of ``channel``, blocking or asyncio."""
        health = channel.unary_unary(
            _health.CHECK_METHOD,
            request_serializer=_health.encode_request,
            response_deserializer=_health.decode_response,
        )
        return cls(
            explain_pb2_grpc.ExplainServiceStub(channel),
            jobs_pb2_grpc.VisualizeServiceStub(channel),
            imagesets_pb2_grpc.ImageSetServiceStub(channel),
            evaluate_pb2_grpc.EvaluateServiceStub(channel),
            health,
        )


class Connection(Generic[ChannelT]):
    """A client's settings (``config``), its channel and stubs; ``_open`` makes the channel."""

    def __init__(
        self,
        address: str = "localhost:50051",
        *,
        timeout: float | None = 30.0,
        tls: bool = False,
        root_certificates: PemSource | None = None,
        certificate_chain: PemSource | None = None,
        private_key: PemSource | None = None,
        token: str | None = None,
        server_name: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        keepalive_s: float | None = 60.0,
        max_attempts: int = MAX_ATTEMPTS_LIMIT,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.config = ChannelConfig(
            address=address,
            timeout=timeout,
            tls=tls,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            token=token,
            server_name=server_name,
            max_message_bytes=max_message_bytes,
            keepalive_s=keepalive_s,
            max_attempts=max_attempts,
            extra_options=tuple(options),
        )
        self._metadata = self.config.metadata()
        self._channel = self._open(self.config)
        self._stubs = Stubs.on(self._channel)

    def _open(self, config: ChannelConfig) -> ChannelT:
        raise NotImplementedError

    @property
    def address(self) -> str:
        """The server's address."""
        return self.config.address

    def _per_call(self, timeout: float | None) -> dict[str, Any]:
        """A call's ``timeout`` (its own, else the client's) and ``metadata`` arguments."""
        return {"timeout": self.config.resolve_timeout(timeout), "metadata": self._metadata}


__all__ = ["Connection", "Stubs"]
