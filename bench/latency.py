"""Single-caller latency figures: the cache's warm/cold ratio and the service overhead.

Both use one synchronous channel, warmed up by a request that is not counted
(connection set-up is not a per-request cost), and requests built before the
clock starts (client-side encoding is not the service's).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import grpc

from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc

from .loadgen import build_request


def _stub(address: str) -> tuple[grpc.Channel, explain_pb2_grpc.ExplainServiceStub]:
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    stub = explain_pb2_grpc.ExplainServiceStub(channel)
    stub.ListMethods(pb.ListMethodsRequest(), timeout=30)  # connect before any timing
    return channel, stub


def cache_pairs(address: str, model: str, inputs: Sequence[pb.ImageInput]) -> dict[str, float]:
    """Cold: Grad-CAM on a fresh input. Warm, on the same input and its 2nd class: a second
    target (Grad-CAM again), then a second method (Grad-CAM++).

    Every cold request sees an input never sent before, so no cold figure is warm.
    """
    channel, stub = _stub(address)
    cold: list[float] = []
    warm: dict[str, list[float]] = {"gradcam": [], "gradcam++": []}
    try:
        for source in inputs:
            first_request = build_request(model, "gradcam", source)
            started = time.perf_counter()
            first = stub.Explain(first_request, timeout=600)
            cold.append(time.perf_counter() - started)
            if first.cache_hit:
                raise RuntimeError("a fresh input hit the cache: inputs are not distinct")
            for method, latencies in warm.items():
                second = build_request(model, method, source)
                second.targets.CopyFrom(pb.Targets(classes=[first.top_classes[1].index]))
                started = time.perf_counter()
                reply = stub.Explain(second, timeout=600)
                latencies.append(time.perf_counter() - started)
                if not reply.cache_hit:
                    raise RuntimeError("a second request on an input missed the cache")
    finally:
        channel.close()
    cold_ms = statistics.median(cold) * 1e3
    target_ms = statistics.median(warm["gradcam"]) * 1e3
    method_ms = statistics.median(warm["gradcam++"]) * 1e3
    return {
        "cold_p50_ms": cold_ms,
        "warm_p50_ms": method_ms,
        "speedup": cold_ms / method_ms,
        "warm_target_p50_ms": target_ms,
        "speedup_target": cold_ms / target_ms,
    }


def overhead(address: str, model: str, inputs: Sequence[pb.ImageInput]) -> dict[str, float]:
    """Latency minus compute at concurrency 1, and where it goes (medians, ms).

    ``transport``: client latency minus the server's own total (gRPC, serialisation,
    the client); ``decode``, ``queue``: the server's timings; ``server_other``: the
    server's total minus decode, queue and compute (cache look-up, thread hand-offs,
    heatmap placement). ``noop_rtt``: the round trip of ``ListMethods``, which does no work.
    """
    channel, stub = _stub(address)
    rows: list[dict[str, float]] = []
    noop: list[float] = []
    try:
        for source in inputs:
            request = build_request(model, "gradcam", source)
            started = time.perf_counter()
            reply = stub.Explain(request, timeout=600)
            latency_ms = (time.perf_counter() - started) * 1e3
            t = reply.timings
            rows.append(
                {
                    "overhead": latency_ms - t.compute_ms,
                    "transport": latency_ms - t.total_ms,
                    "decode": t.decode_ms,
                    "queue": t.queue_ms,
                    "server_other": t.total_ms - t.decode_ms - t.queue_ms - t.compute_ms,
                    "compute": t.compute_ms,
                }
            )
            started = time.perf_counter()
            stub.ListMethods(pb.ListMethodsRequest(), timeout=30)
            noop.append((time.perf_counter() - started) * 1e3)
    finally:
        channel.close()
    figures = {f"{name}_p50_ms": statistics.median(row[name] for row in rows) for name in rows[0]}
    figures["noop_rtt_p50_ms"] = statistics.median(noop)
    return figures
