"""An asyncio gRPC load generator: many concurrent callers, latency percentiles, throughput.

It runs for a number of requests or for a duration, each caller taking a method
from the mix in turn and a fresh input, or with probability ``repeat_share`` an
input already sent (to exercise the cache).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from grpc import aio

from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc


@dataclass
class LoadResult:
    """Latencies (seconds) of successful requests, their count per second and the errors."""

    input_kind: str = "jpeg"
    mode: str = "requests"
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

    def summary(self) -> dict[str, Any]:
        return {
            "input": self.input_kind,
            "mode": self.mode,
            "elapsed_s": self.elapsed_s,
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
    model: str, method: str, image: bytes | pb.ImageInput, options: dict[str, float] | None = None
) -> pb.ExplainRequest:
    """An ``Explain`` request; ``image`` is JPEG bytes or a prepared ``ImageInput``."""
    values = {k: pb.OptionValue(number=float(v)) for k, v in (options or {}).items()}
    source = image if isinstance(image, pb.ImageInput) else pb.ImageInput(encoded=image)
    return pb.ExplainRequest(model=model, method=method, input=source, options=values)


def _budget(requests: int | None, duration_s: float | None) -> tuple[Iterator[int], float]:
    """Request indices to hand out and the wall-clock deadline (inf: none)."""
    if (requests is None) == (duration_s is None):
        raise ValueError("give exactly one of requests and duration_s")
    if duration_s is not None:
        if duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {duration_s}")
        return iter(range(1 << 62)), time.perf_counter() + duration_s
    assert requests is not None
    return iter(range(requests)), float("inf")


async def run_load(
    address: str,
    model: str,
    methods: Sequence[str],
    inputs: Iterable[bytes | pb.ImageInput],
    *,
    concurrency: int,
    requests: int | None = None,
    duration_s: float | None = None,
    repeat_share: float = 0.0,
    options: dict[str, dict[str, float]] | None = None,
    input_kind: str = "jpeg",
    seed: int = 0,
) -> LoadResult:
    """Send ``requests`` requests, or keep sending for ``duration_s`` seconds (requests in
    flight at the deadline still finish and count), from ``concurrency`` callers."""
    rng = random.Random(seed)
    result = LoadResult(input_kind=input_kind, mode="duration" if duration_s else "requests")
    fresh = iter(inputs)
    sent: list[bytes | pb.ImageInput] = []
    counter, deadline = _budget(requests, duration_s)
    options = options or {}
    async with aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = explain_pb2_grpc.ExplainServiceStub(channel)

        async def caller() -> None:
            for index in counter:
                if time.perf_counter() >= deadline:
                    return
                method = methods[index % len(methods)]
                if sent and rng.random() < repeat_share:
                    image = sent[rng.randrange(len(sent))]
                else:
                    image = next(fresh)
                    sent.append(image)
                request = build_request(model, method, image, options.get(method))
                started = time.perf_counter()
                try:
                    reply = await stub.Explain(request, timeout=600)
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
