"""A bounded soak and a 5x overload, each against a real server on a real port.

The callers are separate processes (a short Python snippet run with the test's own
interpreter, importing grpc and the generated stubs but never torch), so the server,
which runs in this process, is measured alone: its resident set is this process's
``VmRSS``, and no caller competes with it for the GIL.

Soak: client processes send a mix of light and heavy ``Explain`` requests, fresh and
repeated images, and about half of them are killed with SIGKILL at a random moment,
most of them mid-request. The server must keep answering, never answer INTERNAL or
UNKNOWN, drop every abandoned request, and hold its resident set flat once its
activation cache is full.

Overload: the rate the server sustains for Grad-CAM on r18 is measured closed-loop,
then five times as many callers as its 32-request queue holds send at once, each again
as soon as it is answered or refused. Every call must be answered or refused with
RESOURCE_EXHAUSTED, none may hang, and the answered ones keep a bounded latency.

docs/reliability.md records what these tests measured on a 2-core machine.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rpc_helpers import random_image, request, stub

from camserve_server.runtime.metrics import INFLIGHT, REQUEST_LATENCY
from server_harness import ServerThread, settings_for

pytestmark = pytest.mark.slow

MIB = 1 << 20
RecordProperty = Callable[[str, object], None]

# Codes an overloaded or abandoned call may end with; anything else is a fault.
EXPECTED = {"OK", "DEADLINE_EXCEEDED", "CANCELLED", "RESOURCE_EXHAUSTED"}

# One soak client: sends ``count`` requests back to back, each drawn from the mix, and
# logs "send" before and "done CODE SECONDS" after each one, flushed, so that the log of
# a killed client still tells what it had been answered and whether a call was in flight.
CLIENT = """
import io, json, sys, time
import grpc
import numpy as np
from PIL import Image
from camserve.v1 import explain_pb2 as pb, explain_pb2_grpc as rpc

address, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
timeout, repeat_share, repeated = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
mix = json.loads(sys.argv[7])
rng = np.random.default_rng(seed)
explain = rpc.ExplainServiceStub(grpc.insecure_channel(address)).Explain

def png(n):
    shape = (40 + n % 3 * 28, 48 + n % 2 * 32, 3)
    pixels = np.random.default_rng(n).integers(0, 256, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()

print("ready", flush=True)
for i in range(count):
    model, method, layer, options = mix[int(rng.integers(len(mix)))]
    fresh = rng.random() >= repeat_share
    n = 1_000_000 + seed * count + i if fresh else int(rng.integers(repeated))
    values = {k: pb.OptionValue(number=v) for k, v in options.items()}
    image = pb.ImageInput(encoded=png(n))
    query = pb.ExplainRequest(model=model, method=method, layer=layer, input=image,
                              options=values)
    print("send", i, model, method, flush=True)
    started = time.monotonic()
    try:
        explain(query, timeout=timeout)
        code = "OK"
    except grpc.RpcError as exc:
        code = exc.code().name
    print("done", i, code, f"{time.monotonic() - started:.4f}", flush=True)
"""

# The overload driver (grpc.aio): Grad-CAM on r18 from ``callers`` closed-loop callers for
# ``seconds``; prints one JSON object with each call's status, latency and send time.
DRIVER = """
import asyncio, io, itertools, json, sys, time
import grpc
import numpy as np
from grpc import aio
from PIL import Image
from camserve.v1 import explain_pb2 as pb, explain_pb2_grpc as rpc

address, callers = sys.argv[1], int(sys.argv[2])
seconds, timeout = float(sys.argv[3]), float(sys.argv[4])

def png(n):
    pixels = np.random.default_rng(n).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()

images = [png(n) for n in range(64)]
calls = []

async def main():
    async with aio.insecure_channel(address) as channel:
        explain = rpc.ExplainServiceStub(channel).Explain
        await channel.channel_ready()
        start = time.monotonic()
        end = start + seconds

        async def one(n):
            query = pb.ExplainRequest(model="r18", method="gradcam",
                                      input=pb.ImageInput(encoded=images[n % len(images)]))
            sent = time.monotonic()
            try:
                await explain(query, timeout=timeout)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            calls.append((code, time.monotonic() - sent, sent - start))

        numbers = itertools.count()

        async def caller():
            while time.monotonic() < end:
                await one(next(numbers))

        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.monotonic() - start
        print(json.dumps({"elapsed": elapsed, "calls": calls}))

asyncio.run(main())
"""


def _rss_mib() -> float:
    """This process's resident set (the in-process server's), in MiB."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert match is not None
    return int(match.group(1)) / 1024


def _latency_buckets(server: ServerThread) -> Counter[tuple[str, float]]:
    """The server's request-latency histogram, summed over models and methods: requests
    by the status the caller got and bucket bound (seconds, cumulative; inf: all)."""
    assert server.runtime is not None
    buckets: Counter[tuple[str, float]] = Counter()
    for family in server.runtime.metrics.registry.collect():
        if family.name == REQUEST_LATENCY:
            for sample in family.samples:
                if sample.name == REQUEST_LATENCY + "_bucket":
                    key = (sample.labels["code"], float(sample.labels["le"]))
                    buckets[key] += int(sample.value)
    return buckets


def _codes(buckets: Counter[tuple[str, float]]) -> Counter[str]:
    """Requests by status, from ``_latency_buckets``."""
    return Counter({code: n for (code, bound), n in buckets.items() if bound == float("inf")})


def _bucket_quantile(buckets: Counter[tuple[str, float]], code: str, q: float) -> float:
    """The bound (seconds) of the first bucket that holds the quantile ``q`` of ``code``."""
    bounds = sorted((bound, n) for (c, bound), n in buckets.items() if c == code)
    total = bounds[-1][1] if bounds else 0
    return next((bound for bound, n in bounds if n >= q * total), float("nan"))


def _inflight(server: ServerThread) -> float:
    assert server.runtime is not None
    value = server.runtime.metrics.registry.get_sample_value(INFLIGHT)
    return 0.0 if value is None else float(value)


def _wait_idle(server: ServerThread, within_s: float) -> float:
    """Seconds until no request is in flight, queued or computing; fails after ``within_s``."""
    runtime = server.runtime
    assert runtime is not None
    started = time.monotonic()
    while (
        _inflight(server) > 0
        or runtime.batcher.depth > 0
        or any(worker.pending for worker in runtime.workers)
    ):
        elapsed = time.monotonic() - started
        assert elapsed < within_s, (
            f"still busy {elapsed:.1f} s after the last caller went: inflight "
            f"{_inflight(server)}, queued {runtime.batcher.depth}, "
            f"worker batches {[w.pending for w in runtime.workers]}"
        )
        time.sleep(0.05)
    return time.monotonic() - started


# --- 1. The soak -------------------------------------------------------------------------

# Small enough that the soak rewrites it whole even on a slow, shared machine (under a
# parallel test run it answered 10 requests/s and wrote 179 entries of about 40 KiB).
SOAK_CACHE_BYTES = 4 * MIB
LIVE_CLIENTS = 6  # client processes at once
KILL_SHARE = 0.5  # of clients, SIGKILLed at a random moment
CALL_TIMEOUT_S = 30.0
REPEAT_SHARE = 0.3  # of requests, on one of REPEATED images (cache hits)
REPEATED = 16
FILL_IMAGES = 160  # fresh r18 layer1 activations of 64 KiB: more than the cache holds
WARM_UP_S = 12.0  # of the soak's own traffic, after the fill, before the RSS reference
SOAK_S = 40.0
RSS_GROWTH_MIB = 150.0  # allowed from the end of the warm-up to the end of the soak

# (model, method, layer, options). Grad-CAM at r18's early layers stores 16-64 KiB
# activations, so the 8 MiB cache fills within the warm-up and then keeps evicting.
MIX: list[tuple[str, str, str, dict[str, float]]] = [
    ("r18", "gradcam", "layer1", {}),
    ("r18", "gradcam", "layer1", {}),
    ("r18", "gradcam", "layer2", {}),
    ("r18", "gradcam++", "layer3", {}),
    ("r18", "gradcam", "", {}),
    ("mnv3", "gradcam++", "", {}),
    ("demo", "gradcam", "", {}),
    ("r18", "saliency", "", {}),
    ("mnv3", "saliency", "", {}),
    ("r18", "occlusion", "", {"window": 16, "stride": 8}),
    ("demo", "occlusion", "", {"window": 8, "stride": 4}),
    ("r18", "integrated_gradients", "", {"steps": 8}),
    ("mnv3", "integrated_gradients", "", {"steps": 8}),
]


@dataclass
class Client:
    """One client process, its log, and how long after it is ready it is to be killed."""

    process: subprocess.Popen[bytes]
    log: Path
    kill_after: float | None
    kill_at: float | None = None
    killed: bool = False

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@dataclass
class Tally:
    """What the client processes saw: statuses of completed calls, kills, latencies."""

    codes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    clients: int = 0
    killed: int = 0
    killed_mid_request: int = 0
    crashed: list[str] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)  # the server's, MiB, every 0.5 s

    def add(self, client: Client) -> None:
        self.clients += 1
        lines = client.lines()
        for line in lines:
            words = line.split()
            if len(words) == 4 and words[0] == "done":
                self.codes[words[2]] += 1
                self.latencies.append(float(words[3]))
        if client.killed:
            self.killed += 1
            self.killed_mid_request += bool(lines) and lines[-1].startswith("send")
        elif client.process.returncode != 0:
            self.crashed.append("\n".join(lines[-20:]))


class Soak:
    """Keeps ``LIVE_CLIENTS`` client processes running against one server, killing some."""

    def __init__(self, server: ServerThread, folder: Path, seed: int) -> None:
        self.server = server
        self.folder = folder
        self.rng = random.Random(seed)
        self.started = 0

    def _spawn(self) -> Client:
        self.started += 1
        log = self.folder / f"client-{self.started}.log"
        count = self.rng.randint(20, 60)
        argv = [self.server.address, self.started, count, CALL_TIMEOUT_S, REPEAT_SHARE, REPEATED]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-c", CLIENT, *map(str, argv), json.dumps(MIX)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        kill_after = self.rng.uniform(0.2, 4.0) if self.rng.random() < KILL_SHARE else None
        return Client(process, log, kill_after)

    def run(self, seconds: float) -> Tally:
        """Keep the clients going for ``seconds``, then kill those still running
        (mid-request, most of them) and tally every log."""
        tally = Tally()
        live: list[Client] = []
        started = next_sample = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now - started >= seconds:
                    break
                if now >= next_sample:
                    tally.rss.append(_rss_mib())
                    next_sample = now + 0.5
                for client in live:
                    armed = client.kill_after is not None and client.kill_at is None
                    if armed and client.lines()[:1] == ["ready"]:
                        client.kill_at = now + (client.kill_after or 0.0)
                    if client.kill_at is not None and now >= client.kill_at:
                        self._kill(client)
                for client in [c for c in live if c.process.poll() is not None]:
                    live.remove(client)
                    tally.add(client)
                while len(live) < LIVE_CLIENTS:
                    live.append(self._spawn())
                time.sleep(0.05)
        finally:
            for client in live:
                self._kill(client)
                tally.add(client)
        return tally

    @staticmethod
    def _kill(client: Client) -> None:
        if client.process.poll() is None:
            client.process.send_signal(signal.SIGKILL)
            client.killed = True
        client.process.wait(10)


def _fill_cache(server: ServerThread) -> None:
    """Fill the activation cache past its size: fresh r18 layer1 Grad-CAMs, 8 at a time."""
    client = stub(server.address)
    for first in range(0, FILL_IMAGES, 8):
        calls = []
        for n in range(first, first + 8):
            query = request("r18", "gradcam", random_image(10_000 + n, (64, 64)))
            query.layer = "layer1"
            calls.append(client.Explain.future(query, timeout=60))
        for call in calls:
            call.result()


@pytest.fixture
def soak_server(test_config: Path) -> Iterator[ServerThread]:
    """demo, r18 and mnv3 behind an 8 MiB activation cache and a 2 ms batching delay."""
    thread = ServerThread(settings_for(test_config, cache_bytes=SOAK_CACHE_BYTES, max_delay_ms=2.0))
    thread.start()
    yield thread
    thread.stop()


def test_soak_with_clients_killed_mid_request(
    soak_server: ServerThread, tmp_path: Path, record_property: RecordProperty
) -> None:
    """Under a minute of mixed light and heavy requests from client processes, half of
    them SIGKILLed at random moments, proves that: every completed call ended OK or with
    an overload status (never INTERNAL or UNKNOWN, by the callers' logs and by the
    server's own request metrics, which count no more CANCELLED calls than clients were
    killed mid-request); every abandoned request leaves the server (nothing in
    flight, queued or computing within seconds of the last caller); the server still
    answers every model afterwards; and, once its 8 MiB activation cache is full and
    evicting, its resident set stays within ``RSS_GROWTH_MIB`` of where the warm-up left
    it."""
    server = soak_server
    assert server.runtime is not None
    memory = server.runtime.cache.memory
    before = _latency_buckets(server)
    soak = Soak(server, tmp_path, seed=20240611)
    rss_start = _rss_mib()

    _fill_cache(server)
    filled = memory.stats()
    assert filled.nbytes >= 0.9 * SOAK_CACHE_BYTES and filled.writes > filled.entries, filled
    warm_up = soak.run(WARM_UP_S)
    _wait_idle(server, 15)
    rss_warm = _rss_mib()
    writes_before = memory.stats().writes

    soak_tally = soak.run(SOAK_S)
    samples = soak_tally.rss
    idle_s = _wait_idle(server, 15)
    rss_end = _rss_mib()

    for model, method, _layer, options in MIX:
        reply = stub(server.address).Explain(
            request(model, method, random_image(7), options=options), timeout=30
        )
        assert len(reply.heatmaps) == 1

    server_codes = _codes(_latency_buckets(server) - before)
    stats = memory.stats()
    killed_mid_request = warm_up.killed_mid_request + soak_tally.killed_mid_request
    figures: dict[str, object] = {
        "clients": warm_up.clients + soak_tally.clients,
        "killed": warm_up.killed + soak_tally.killed,
        "killed_mid_request": killed_mid_request,
        "warm_up_codes": dict(warm_up.codes),
        "soak_codes": dict(soak_tally.codes),
        "soak_rps": sum(soak_tally.codes.values()) / SOAK_S,
        "soak_p50_ms": float(np.percentile(soak_tally.latencies, 50)) * 1e3,
        "soak_p99_ms": float(np.percentile(soak_tally.latencies, 99)) * 1e3,
        "server_codes": dict(server_codes),
        "idle_after_s": idle_s,
        "cache_bytes": stats.nbytes,
        "cache_entries": stats.entries,
        "cache_writes_in_soak": stats.writes - writes_before,
        "rss_start_mib": rss_start,
        "rss_warm_mib": rss_warm,
        "rss_end_mib": rss_end,
        "rss_soak_max_mib": max(samples),
        "rss_quartiles_mib": [samples[len(samples) * q // 4] for q in range(4)],
    }
    for name, value in figures.items():
        record_property(name, value)
    print("soak figures:", json.dumps(figures))

    assert not warm_up.crashed and not soak_tally.crashed, warm_up.crashed + soak_tally.crashed
    unexpected = {code: n for code, n in (warm_up.codes + soak_tally.codes).items()
                  if code not in EXPECTED}  # fmt: skip
    assert not unexpected, f"callers got {unexpected}"
    assert not set(server_codes) - EXPECTED, f"the server recorded {server_codes}"
    assert server_codes["CANCELLED"] <= killed_mid_request, "cancelled beyond the kills"
    assert soak_tally.codes["OK"] >= 200, f"too little was answered: {soak_tally.codes}"
    assert killed_mid_request >= 10, figures
    assert stats.writes - writes_before > stats.entries, "the soak wrote less than a full cache"
    assert rss_end - rss_warm < RSS_GROWTH_MIB, figures


# --- 2. Overload -------------------------------------------------------------------------

OVERLOAD_QUEUE = 32
MEASURE_CALLERS = 16  # closed loop: half the queue, so nothing is refused while measuring
MEASURE_S = 3.0
OVERLOAD_CALLERS = 5 * OVERLOAD_QUEUE  # five times what the queue holds, each re-sending at once
OVERLOAD_S = 12.0
OVERLOAD_TIMEOUT_S = 20.0  # per call; a call that reaches it has hung
# On 2 cores, shared with another test run: answered p99 1.04 s, refused p99 0.50 s at 160
# callers (docs/reliability.md); the lines leave room for a slower machine.
ANSWERED_P99_S = 3.0
REFUSED_P99_S = 1.0


@dataclass
class Load:
    """One driver run: every call's status and latency, and how long the run took."""

    codes: list[str]
    latencies: list[float]
    elapsed_s: float

    def of(self, code: str) -> list[float]:
        return [s for c, s in zip(self.codes, self.latencies, strict=True) if c == code]

    def percentile_ms(self, code: str, q: float) -> float:
        chosen = self.of(code)
        return float(np.percentile(chosen, q)) * 1e3 if chosen else float("nan")


def _drive(address: str, callers: int, seconds: float) -> Load:
    """Run the load driver in its own process: ``callers`` closed-loop callers, each sending
    its next request as soon as the last one is answered or refused."""
    argv = [address, str(callers), str(seconds), str(OVERLOAD_TIMEOUT_S)]
    finished = subprocess.run(
        [sys.executable, "-c", DRIVER, *argv],
        capture_output=True,
        text=True,
        timeout=seconds + OVERLOAD_TIMEOUT_S + 60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    result: dict[str, Any] = json.loads(finished.stdout)
    calls: list[tuple[str, float, float]] = result["calls"]
    codes, latencies = [c[0] for c in calls], [c[1] for c in calls]
    return Load(codes, latencies, float(result["elapsed"]))


@pytest.fixture
def small_queue_server(test_config: Path) -> Iterator[ServerThread]:
    """demo, r18 and mnv3 behind a 32-request queue; no activation cache, so that every
    request pays for its forward and backward passes."""
    thread = ServerThread(
        settings_for(test_config, queue_size=OVERLOAD_QUEUE, max_delay_ms=5.0, cache_bytes=0)
    )
    thread.start()
    yield thread
    thread.stop()


def test_five_times_the_callers_the_queue_holds_are_answered_or_refused_promptly(
    small_queue_server: ServerThread, record_property: RecordProperty
) -> None:
    """Five times as many callers as its 32-request queue holds, each sending again as soon
    as it is answered or refused: the server answers every call (OK) or refuses it with
    RESOURCE_EXHAUSTED before decoding its image, with no other status and no call left to
    reach its deadline; refusals within ``REFUSED_P99_S`` and answers within
    ``ANSWERED_P99_S`` at p99; it keeps answering at a useful share of the rate it sustains
    (measured first, in the same run) and is idle again at once after.

    A closed loop, because an open loop beyond the rate one event loop accepts calls at
    measures grpc's own backlog: it sheds those calls as CANCELLED before any handler runs
    (docs/reliability.md)."""
    server = small_queue_server
    measured = _drive(server.address, MEASURE_CALLERS, MEASURE_S)
    assert set(measured.codes) == {"OK"}, Counter(measured.codes)
    sustained = len(measured.codes) / measured.elapsed_s

    before = _latency_buckets(server)
    load = _drive(server.address, OVERLOAD_CALLERS, OVERLOAD_S)
    idle_s = _wait_idle(server, 10)
    seen = _latency_buckets(server) - before  # by the server, once it took the call
    server_codes = _codes(seen)
    codes = Counter(load.codes)
    answered, refused = codes["OK"], codes["RESOURCE_EXHAUSTED"]
    figures: dict[str, object] = {
        "sustained_rps": sustained,
        "sustained_p50_ms": measured.percentile_ms("OK", 50),
        "callers": OVERLOAD_CALLERS,
        "sent": len(load.codes),
        "answered": answered,
        "refused": refused,
        "codes": dict(codes),
        "server_codes": dict(server_codes),
        "answered_rps": answered / load.elapsed_s,
        "elapsed_s": load.elapsed_s,
        "answered_p50_ms": load.percentile_ms("OK", 50),
        "answered_p99_ms": load.percentile_ms("OK", 99),
        "answered_max_ms": max(load.of("OK"), default=float("nan")) * 1e3,
        "refused_p50_ms": load.percentile_ms("RESOURCE_EXHAUSTED", 50),
        "refused_p99_ms": load.percentile_ms("RESOURCE_EXHAUSTED", 99),
        "server_refused_p99_le_ms": _bucket_quantile(seen, "RESOURCE_EXHAUSTED", 0.99) * 1e3,
        "server_answered_p99_le_ms": _bucket_quantile(seen, "OK", 0.99) * 1e3,
        "idle_after_s": idle_s,
    }
    for name, value in figures.items():
        record_property(name, value)
    print("overload figures:", json.dumps(figures))

    others = {code: n for code, n in codes.items() if code not in ("OK", "RESOURCE_EXHAUSTED")}
    assert not others, (
        f"calls ended {others}; the server's own metrics recorded {dict(server_codes)}: {figures}"
    )
    assert refused > 0, f"nothing was refused: the server was not overloaded: {figures}"
    assert answered >= 0.3 * sustained * OVERLOAD_S, f"answers collapsed: {figures}"
    assert load.percentile_ms("RESOURCE_EXHAUSTED", 99) < REFUSED_P99_S * 1e3, (
        f"refusals are not prompt at the caller (the server's handler: "
        f"p99 <= {figures['server_refused_p99_le_ms']} ms): {figures}"
    )
    assert load.percentile_ms("OK", 99) < ANSWERED_P99_S * 1e3, figures
