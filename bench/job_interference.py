"""Explanation latency while optimisation jobs run: p50/p95 of Grad-CAM on the demo
model, through a real server, alone and with ``--jobs`` jobs running.

Job steps run on the device workers behind explanation batches (``Priority.BACKGROUND``),
so an explanation waits for at most the one step in flight. This measures what that
costs::

    python -m bench.job_interference                 # 300 requests per phase, 2 jobs
    python -m bench.job_interference --quick         # tiny settings (checks the harness)

Each phase sends the same requests (the demo samples, decoded by the server each
time: the activation cache is off), from ``--concurrency`` closed-loop callers; the
two phases alternate ``--rounds`` times so that machine noise falls on both.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np

from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc, jobs_pb2_grpc
from camserve.v1 import jobs_pb2 as jpb
from camserve_server.config import Settings
from camserve_server.demo import SAMPLES_DIR
from camserve_server.inprocess import ServerThread

JOB_METHOD = "activation_maximization"


def _explain_latencies(
    stub: explain_pb2_grpc.ExplainServiceStub, images: Sequence[bytes], count: int, callers: int
) -> list[float]:
    """Seconds per Grad-CAM call, ``count`` calls from ``callers`` closed-loop callers."""

    def one(k: int) -> float:
        request = pb.ExplainRequest(
            model="demo", method="gradcam", input=pb.ImageInput(encoded=images[k % len(images)])
        )
        started = time.perf_counter()
        stub.Explain(request, timeout=60)
        return time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=callers) as pool:
        return list(pool.map(one, range(count)))


class _Jobs:
    """``count`` long jobs streaming in background threads until ``stop``."""

    def __init__(self, stub: jobs_pb2_grpc.VisualizeServiceStub, count: int, steps: int) -> None:
        self.calls = [
            stub.Visualize(
                jpb.VisualizeRequest(
                    model="demo",
                    method=JOB_METHOD,
                    target=k % 6,
                    seed=1000 + k,  # a fresh seed each run: never a cached result
                    options={"steps": pb.OptionValue(number=steps)},
                ),
                timeout=3600,
            )
            for k in range(count)
        ]
        self.steps = [0] * count
        self.threads = [
            threading.Thread(target=self._drain, args=(k,), daemon=True) for k in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _drain(self, k: int) -> None:
        try:
            for event in self.calls[k]:
                if event.WhichOneof("event") == "progress":
                    self.steps[k] = event.progress.step
        except grpc.RpcError:
            pass  # cancelled by stop()

    def wait_started(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while min(self.steps) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> list[int]:
        done = list(self.steps)
        for call in self.calls:
            call.cancel()
        for thread in self.threads:
            thread.join(timeout=10)
        return done


def _summary(latencies: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "max_ms": float(ms.max()),
        "requests": float(ms.size),
    }


def measure(requests: int, jobs: int, callers: int, warmup: int, rounds: int) -> dict[str, Any]:
    """Both phases on one fresh server, alternated ``rounds`` times (machine noise falls
    on both alike); returns their latency summaries and the jobs' step rate."""
    settings = Settings(
        host="127.0.0.1", port=0, metrics_port=-1, cache_bytes=0, max_jobs=max(1, jobs)
    )
    images = [path.read_bytes() for path in sorted(SAMPLES_DIR.glob("*.png"))]
    per_round = max(1, requests // rounds)
    alone: list[float] = []
    with_jobs: list[float] = []
    job_steps, elapsed = 0, 0.0
    with ServerThread(settings) as server:
        channel = grpc.insecure_channel(server.address)
        explain = explain_pb2_grpc.ExplainServiceStub(channel)
        visualize = jobs_pb2_grpc.VisualizeServiceStub(channel)
        _explain_latencies(explain, images, warmup, callers)
        for _ in range(rounds):
            alone += _explain_latencies(explain, images, per_round, callers)
            running = _Jobs(visualize, jobs, settings.max_job_steps)
            running.wait_started()
            started = time.perf_counter()
            steps_before = sum(running.steps)
            with_jobs += _explain_latencies(explain, images, per_round, callers)
            elapsed += time.perf_counter() - started
            job_steps += sum(running.stop()) - steps_before
        channel.close()
    return {
        "alone": _summary(alone),
        "with_jobs": _summary(with_jobs),
        "jobs": jobs,
        "callers": callers,
        "rounds": rounds,
        "job_steps_per_s": job_steps / elapsed if elapsed > 0 else 0.0,
    }


def table(result: dict[str, Any]) -> str:
    alone, loaded = result["alone"], result["with_jobs"]
    rows = [
        "| Grad-CAM, demo model | p50 | p95 | max |",
        "|---|---|---|---|",
        f"| alone | {alone['p50_ms']:.1f} ms | {alone['p95_ms']:.1f} ms "
        f"| {alone['max_ms']:.1f} ms |",
        f"| with {result['jobs']} jobs running | {loaded['p50_ms']:.1f} ms "
        f"| {loaded['p95_ms']:.1f} ms | {loaded['max_ms']:.1f} ms |",
    ]
    ratio = loaded["p95_ms"] / alone["p95_ms"] if alone["p95_ms"] else float("nan")
    rows.append(
        f"\np95 with jobs / alone: {ratio:.2f}x; the jobs ran "
        f"{result['job_steps_per_s']:.0f} steps/s meanwhile "
        f"({result['callers']} caller(s), {int(alone['requests'])} requests per phase "
        f"over {result['rounds']} alternations)"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300, help="Grad-CAM calls per phase")
    parser.add_argument("--jobs", type=int, default=2, help="jobs running in the second phase")
    parser.add_argument("--concurrency", type=int, default=1, help="closed-loop callers")
    parser.add_argument("--warmup", type=int, default=30, help="calls before measuring")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two phases")
    parser.add_argument("--quick", action="store_true", help="tiny settings (harness check)")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.warmup, args.rounds = 12, 2, 1
    result = measure(args.requests, args.jobs, args.concurrency, args.warmup, max(1, args.rounds))
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
