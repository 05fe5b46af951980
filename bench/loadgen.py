"""An asyncio gRPC load generator: many concurrent callers, latency percentiles, throughput."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
from grpc import aio

from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc


@dataclass
class LoadResult:
    """Latencies (seconds) of successful requests, their count per second and the errors."""

    latencies: list[float] = field(default_factory=list)
    compute_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    elapsed_s: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1e3 if self.latencies else float("nan")

    def summary(self) -> dict[str, float]:
        return {
            "requests": len(self.latencies),
            "errors": sum(self.errors.values()),
            "throughput_rps": self.throughput,
            "p50_ms": self.percentile(50),
            "p95_ms": self.percentile(95),
            "p99_ms": self.percentile(99),
            "compute_p50_ms": float(np.median(self.compute_ms))
            if self.compute_ms
            else float("nan"),
            "cache_hit_rate": self.cache_hits / max(1, len(self.latencies)),
        }


def build_request(
    model: str, method: str, image: bytes, options: dict[str, float] | None = None
) -> pb.ExplainRequest:
    values = {k: pb.OptionValue(number=float(v)) for k, v in (options or {}).items()}
    return pb.ExplainRequest(
        model=model, method=method, input=pb.ImageInput(encoded=image), options=values
    )


async def run_load(
    address: str,
    model: str,
    methods: Sequence[str],
    images: Sequence[bytes],
    *,
    concurrency: int,
    requests: int,
    repeat_share: float = 0.0,
    options: dict[str, dict[str, float]] | None = None,
    seed: int = 0,
) -> LoadResult:
    """Send ``requests`` requests from ``concurrency`` callers; each picks a method from
    ``methods`` in turn and a fresh image, or with probability ``repeat_share`` an image
    already sent (to exercise the cache)."""
    rng = random.Random(seed)
    result = LoadResult()
    fresh = iter(images)
    sent: list[bytes] = []
    counter = iter(range(requests))
    options = options or {}
    async with aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = explain_pb2_grpc.ExplainServiceStub(channel)

        async def caller() -> None:
            for index in counter:
                method = methods[index % len(methods)]
                if sent and rng.random() < repeat_share:
                    image = rng.choice(sent)
                else:
                    image = next(fresh)
                    sent.append(image)
                started = time.perf_counter()
                try:
                    reply = await stub.Explain(
                        build_request(model, method, image, options.get(method)), timeout=600
                    )
                except grpc.RpcError as exc:
                    name = exc.code().name if isinstance(exc, aio.AioRpcError) else "ERROR"
                    result.errors[name] = result.errors.get(name, 0) + 1
                    continue
                result.latencies.append(time.perf_counter() - started)
                result.compute_ms.append(reply.timings.compute_ms)
                result.cache_hits += int(reply.cache_hit)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - started
    return result
