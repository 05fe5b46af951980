"""The gRPC front end's own rate: requests/s when the device does (next to) no work.

Two figures, each from ``clients`` client processes (so the load generator's
Python does not share the server's interpreter) running ``concurrency``
asyncio callers for ``duration_s`` seconds:

- ``noop``: ``ListMethods``, which touches no model: gRPC, the interceptors and
  the event loop alone;
- ``warm``: ``Explain`` Grad-CAM on images whose activation is cached, for
  their other top classes in turn: the whole service path (validation, cache
  look-up, batching, a device-worker turn, the float32 heatmap in the reply)
  with only the head after the layer to compute.

If either is below the device's Grad-CAM rate, the front end is the limit.
``python -m bench.frontend --address HOST:PORT`` measures a server already running.
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


def prime(address: str, model: str, inputs: Sequence[pb.ImageInput]) -> list[list[int]]:
    """Send each input once (Grad-CAM, its top class) so its activation is cached; return
    each input's other top classes, the targets of the warm requests."""
    others = []
    with grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        for source in inputs:
            reply = stub.Explain(build_request(model, "gradcam", source), timeout=600)
            others.append([score.index for score in reply.top_classes[1:]])
    return others


def _warm_requests(
    model: str, inputs: Sequence[pb.ImageInput], targets: list[list[int]]
) -> list[bytes]:
    requests = []
    for source, classes in zip(inputs, targets, strict=True):
        for target in classes:
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
    warm = _warm_requests(model, inputs, prime(address, model, inputs))
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


def main(argv: Sequence[str] | None = None) -> int:
    """Measure a server already running (one process or a ``--processes N`` supervisor)."""
    import argparse
    import json

    from .inputs import jpeg_images

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="host:port of a running server")
    parser.add_argument("--model", default="", help="model name (empty: the only one served)")
    parser.add_argument("--size", type=int, default=224, help="side of the JPEG images sent")
    parser.add_argument("--images", type=int, default=8, help="distinct cached images")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--concurrency", type=int, default=16, help="callers per process")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per figure")
    args = parser.parse_args(argv)
    inputs = [pb.ImageInput(encoded=image) for image in jpeg_images(args.images, args.size, 5)]
    figures = frontend_rates(
        args.address,
        args.model,
        inputs,
        clients=args.clients,
        concurrency=args.concurrency,
        duration_s=args.duration,
    )
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
