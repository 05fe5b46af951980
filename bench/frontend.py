"""The gRPC front end's own rate: requests/s when the device does (next to) no work.

Two figures, each from ``clients`` client processes (so the load generator's
Python does not share the server's interpreter) running ``concurrency``
asyncio callers for ``duration_s`` seconds:

- ``noop``: ``ListMethods``, which touches no model: gRPC, the interceptors and
  the event loop alone;
- ``warm``: ``Explain`` Grad-CAM on images whose activation is cached, a new
  target each time: the whole service path (validation, cache look-up,
  batching, a device-worker turn, the 224x224 float32 heatmap in the reply)
  with only the head after the layer to compute.

If either is below the device's Grad-CAM rate, the front end is the limit.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Sequence
from typing import Literal

import grpc
from grpc import aio

from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc

from .loadgen import build_request

Kind = Literal["noop", "warm"]
PRIME_CLASS, WARM_CLASSES = 0, 8  # warm requests cycle through classes 1..8


def prime(address: str, model: str, inputs: Sequence[pb.ImageInput]) -> None:
    """Send each input once (Grad-CAM, class 0) so its activation is cached."""
    with grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        for source in inputs:
            request = build_request(model, "gradcam", source)
            request.targets.CopyFrom(pb.Targets(classes=[PRIME_CLASS]))
            stub.Explain(request, timeout=600)


def _warm_requests(model: str, inputs: Sequence[pb.ImageInput]) -> list[bytes]:
    requests = []
    for target in range(1, WARM_CLASSES + 1):
        for source in inputs:
            request = build_request(model, "gradcam", source)
            request.targets.CopyFrom(pb.Targets(classes=[target]))
            requests.append(request.SerializeToString())
    return requests


async def _drive(
    address: str, kind: Kind, requests: list[bytes], concurrency: int, duration_s: float
) -> tuple[int, int, int, float]:
    """(answered, cache hits, errors, elapsed seconds) of one client process."""
    parsed = [pb.ExplainRequest.FromString(r) for r in requests]
    answered = hits = errors = 0
    async with aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        await stub.ListMethods(pb.ListMethodsRequest(), timeout=30)  # connected
        deadline = time.perf_counter() + duration_s

        async def caller(offset: int) -> None:
            nonlocal answered, hits, errors
            i = offset
            while time.perf_counter() < deadline:
                try:
                    if kind == "noop":
                        await stub.ListMethods(pb.ListMethodsRequest(), timeout=30)
                    else:
                        reply = await stub.Explain(parsed[i % len(parsed)], timeout=60)
                        hits += int(reply.cache_hit)
                except grpc.RpcError:
                    errors += 1
                    continue
                answered += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(caller(c) for c in range(concurrency)))
        elapsed = time.perf_counter() - started
    return answered, hits, errors, elapsed


def _client(
    address: str, kind: Kind, requests: list[bytes], concurrency: int, duration_s: float
) -> tuple[int, int, int, float]:
    return asyncio.run(_drive(address, kind, requests, concurrency, duration_s))


def frontend_rates(
    address: str,
    model: str,
    inputs: Sequence[pb.ImageInput],
    *,
    clients: int = 2,
    concurrency: int = 16,
    duration_s: float = 5.0,
) -> dict[str, float]:
    """``noop_rps`` and ``warm_rps`` (with their error counts and the warm cache-hit rate)."""
    prime(address, model, inputs)
    warm = _warm_requests(model, inputs)
    context = multiprocessing.get_context("spawn")  # no fork after gRPC started
    figures: dict[str, float] = {}
    kinds: tuple[Kind, ...] = ("noop", "warm")
    with context.Pool(clients) as pool:
        for kind in kinds:
            runs = pool.starmap(_client, [(address, kind, warm, concurrency, duration_s)] * clients)
            answered = sum(r[0] for r in runs)
            figures[f"{kind}_rps"] = answered / max(r[3] for r in runs)
            figures[f"{kind}_errors"] = float(sum(r[2] for r in runs))
            if kind == "warm":
                figures["warm_cache_hit_rate"] = sum(r[1] for r in runs) / max(1, answered)
    figures.update(clients=float(clients), concurrency=float(concurrency), duration_s=duration_s)
    return figures
