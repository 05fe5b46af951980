"""Redis killed or frozen under load, and a protobuf fuzz of every RPC, each against a real
server on a real port.

* Redis is an optional, shared second cache tier: ``kill -9`` or ``kill -STOP`` of the
  Redis server while callers keep explaining images must fail no request and keep
  latency bounded (short socket timeouts, a circuit breaker); the outage shows in
  ``camserve_cache_errors_total``, and once Redis is back, writes reach it again.
  (``tests/integration/test_server_redis.py`` stops Redis between sequential calls;
  these tests add concurrent load, SIGKILL with a restart, and SIGSTOP.)
* Every method of every service the server registers (found by server reflection and
  the generated descriptors) gets a few hundred seeded messages: random bytes,
  truncated valid messages, random messages and valid messages with random field
  values, sent through generic calls with no serializers. No call may hang, no status
  may be UNKNOWN or INTERNAL (or anything outside ``ALLOWED``), and the server must
  still answer health and a normal Explain afterwards. The faults it found (health
  ``List``, empty tensors, negative map seeds) each keep a test of their own below.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
import pytest
import redis
from google.protobuf import descriptor_pool, message_factory, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from rpc_helpers import metric_value, png_bytes, random_image, request

from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc, imagesets_pb2_grpc
from camserve.v1 import imagesets_pb2 as ipb
from camserve.v1 import jobs_pb2 as jpb
from redis_server import RedisServer
from server_harness import ServerThread, settings_for

# ---------------------------------------------------------------------------------------
# 1 and 2. Redis killed or frozen while callers keep explaining images.

LOAD_MODEL = "r18"
LOAD_CALLERS = 3
CALL_TIMEOUT_LOAD_S = 30.0  # generous: a request that fails is a failure whatever its cause
WARM_S = 2.5  # load before the fault
# Both faults outlast the breaker's 5 s cool-down, so a half-open trial meets them too.
OUTAGE_S = 7.0  # SIGKILL to restart
FREEZE_S = 7.0  # SIGSTOP to SIGCONT
AFTER_S = 1.5  # load kept after writes are seen reaching Redis again
RECOVERY_LIMIT_S = 20.0  # breaker cool-down (5 s) plus slack for a slow machine
# A request stuck behind a frozen Redis without timeouts would wait for the whole freeze.
FREEZE_LATENCY_BOUND_S = 3.0
ERROR_KINDS = ("connection", "timeout", "breaker_open", "dropped_write", "redis")


@dataclass(frozen=True)
class Sample:
    """One Explain call of the load: when it started (monotonic), how long it took, its
    status, and whether the layer's activation came from the cache."""

    started: float
    latency_s: float
    code: grpc.StatusCode
    cache_hit: bool
    details: str = ""


class ExplainLoad:
    """``callers`` threads, each with its own channel, sending Grad-CAM requests back to
    back: three of four a fresh image (a memory miss: a Redis read, a compute and a
    Redis write), one of four an image it sent before (a memory hit)."""

    def __init__(self, address: str, callers: int = LOAD_CALLERS) -> None:
        self.address = address
        self.callers = callers
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
            for i in range(callers)
        ]

    def start(self) -> ExplainLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        for thread in self._threads:
            thread.join(CALL_TIMEOUT_LOAD_S + 10)
        with self._lock:
            return sorted(self.samples, key=lambda s: s.started)

    def _run(self, caller: int) -> None:
        with grpc.insecure_channel(self.address) as channel:
            client = explain_pb2_grpc.ExplainServiceStub(channel)
            images: list[bytes] = []
            i = 0
            while not self._stop.is_set():
                i += 1
                if images and i % 4 == 0:
                    image = images[(i // 4) % len(images)]
                else:
                    image = random_image(caller * 1_000_000 + i, (64, 64))
                    images.append(image)
                started = time.monotonic()
                try:
                    reply = client.Explain(
                        request(LOAD_MODEL, "gradcam", image), timeout=CALL_TIMEOUT_LOAD_S
                    )
                    sample = Sample(
                        started, time.monotonic() - started, grpc.StatusCode.OK, reply.cache_hit
                    )
                except grpc.RpcError as exc:
                    sample = Sample(
                        started, time.monotonic() - started, exc.code(), False, exc.details() or ""
                    )
                with self._lock:
                    self.samples.append(sample)


@dataclass
class Phases:
    """The load's samples split by start time around one fault window."""

    before: list[Sample]
    during: list[Sample]
    after: list[Sample]

    @classmethod
    def split(cls, samples: Sequence[Sample], fault_start: float, fault_end: float) -> Phases:
        return cls(
            [s for s in samples if s.started < fault_start],
            [s for s in samples if fault_start <= s.started < fault_end],
            [s for s in samples if s.started >= fault_end],
        )


def _latency_summary(samples: Sequence[Sample]) -> str:
    if not samples:
        return "n=0"
    ms = sorted(s.latency_s * 1e3 for s in samples)
    p95 = ms[min(len(ms) - 1, math.ceil(0.95 * len(ms)) - 1)]
    hits = sum(s.cache_hit for s in samples)
    return (
        f"n={len(ms)} (cache hits {hits}) p50={statistics.median(ms):.0f}ms "
        f"p95={p95:.0f}ms max={ms[-1]:.0f}ms"
    )


def _redis_errors(server: ServerThread) -> dict[str, float]:
    assert server.runtime is not None
    registry = server.runtime.metrics.registry
    return {
        kind: metric_value(registry, "camserve_cache_errors_total", {"tier": "redis", "kind": kind})
        for kind in ERROR_KINDS
    }


def _redis_writes(server: ServerThread) -> int:
    assert server.runtime is not None
    stats = server.runtime.cache.stats().redis
    assert stats is not None
    return stats.writes


def _cache_keys(redis_server: RedisServer) -> int:
    """How many camserve cache entries the Redis server holds (-1 when it does not answer)."""
    client = redis.Redis(port=redis_server.port, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return sum(1 for _ in client.scan_iter(match="camserve:*", count=1000))
    except redis.RedisError:
        return -1
    finally:
        client.close()


def _wait_for_keys(redis_server: RedisServer) -> int:
    """The number of cache entries, once the Redis server answers again."""
    deadline = time.monotonic() + RECOVERY_LIMIT_S
    while (keys := _cache_keys(redis_server)) < 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    return max(keys, 0)


def _redis_pid(redis_server: RedisServer) -> int:
    client = redis.Redis(port=redis_server.port, socket_timeout=2.0)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def _wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> float:
    """Seconds until ``condition`` held; ``math.inf`` if it did not within ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(poll_s)
    return math.inf


def _failures(samples: Sequence[Sample]) -> list[str]:
    return [
        f"{s.code.name} after {s.latency_s:.2f}s: {s.details}"
        for s in samples
        if s.code != grpc.StatusCode.OK
    ]


@pytest.fixture
def redis_backed(test_config: Path, private_redis: RedisServer) -> Iterator[ServerThread]:
    """A server of one model (r18) whose second cache tier is ``private_redis``."""
    settings = settings_for(test_config, redis_url=private_redis.url)
    settings = replace(settings, models=tuple(m for m in settings.models if m.name == LOAD_MODEL))
    thread = ServerThread(settings)
    thread.start()
    yield thread
    thread.stop()


def _warm(private_redis: RedisServer) -> None:
    """Let the load run until it has run ``WARM_S`` and its writes reach Redis."""
    started = time.monotonic()
    reached = _wait_for(lambda: _cache_keys(private_redis) > 0, RECOVERY_LIMIT_S)
    assert reached < math.inf, "no cache write reached Redis before the fault"
    time.sleep(max(0.0, WARM_S - (time.monotonic() - started)))


@pytest.mark.slow
@pytest.mark.redis
def test_redis_killed_and_restarted_under_load_fails_no_request(
    redis_backed: ServerThread, private_redis: RedisServer
) -> None:
    """Proves: with three callers explaining images back to back, ``kill -9`` of Redis
    for seven seconds fails no request; the outage is counted in ``camserve_cache_errors_total``
    (connection errors, then the breaker skipping Redis); and after Redis restarts
    (empty, same port) the background writes reach it again without any intervention."""
    load = ExplainLoad(redis_backed.address).start()
    try:
        _warm(private_redis)
        errors_before = _redis_errors(redis_backed)
        pid = _redis_pid(private_redis)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        time.sleep(OUTAGE_S)
        errors_down = _redis_errors(redis_backed)
        private_redis.restart()  # empty: nothing is persisted
        back = time.monotonic()
        writes_back = _redis_writes(redis_backed)
        recovered_s = _wait_for(lambda: _cache_keys(private_redis) > 0, RECOVERY_LIMIT_S)
        time.sleep(AFTER_S)
    finally:
        samples = load.stop()
    phases = Phases.split(samples, killed, back)
    outage = {k: errors_down[k] - errors_before[k] for k in ERROR_KINDS}
    print(
        f"\n[redis kill] callers={LOAD_CALLERS} requests={len(samples)} "
        f"before: {_latency_summary(phases.before)}; during outage ({OUTAGE_S:.0f}s): "
        f"{_latency_summary(phases.during)}; after: {_latency_summary(phases.after)}; "
        f"failures={len(_failures(samples))}; outage errors={outage}; "
        f"writes reached Redis {recovered_s:.2f}s after the restart"
    )
    assert not _failures(samples), _failures(samples)[:10]
    assert len(phases.during) >= 5, f"the load did not hold during the outage: {len(phases.during)}"
    assert outage["connection"] > 0, outage
    assert outage["breaker_open"] > 0, outage  # the breaker opened: Redis skipped at once
    assert recovered_s < math.inf, f"no write reached Redis within {RECOVERY_LIMIT_S}s"
    assert _redis_writes(redis_backed) > writes_back


@pytest.mark.slow
@pytest.mark.redis
def test_redis_frozen_under_load_fails_no_request_and_latency_stays_bounded(
    redis_backed: ServerThread, private_redis: RedisServer
) -> None:
    """Proves: with three callers explaining images back to back, ``kill -STOP`` of Redis
    for seven seconds (connections open, nothing answers) fails no request, and no request
    waits anywhere near the freeze: Redis reads time out in 0.1 s and the breaker then
    skips Redis (its half-open trial too costs one timeout), so every call stays under
    ``FREEZE_LATENCY_BOUND_S``. The freeze is counted (timeouts, breaker); after SIGCONT
    writes reach Redis again."""
    load = ExplainLoad(redis_backed.address).start()
    try:
        _warm(private_redis)
        errors_before = _redis_errors(redis_backed)
        frozen = time.monotonic()
        private_redis.pause()
        time.sleep(FREEZE_S)
        private_redis.resume()
        thawed = time.monotonic()
        errors_frozen = _redis_errors(redis_backed)
        writes_at_thaw = _redis_writes(redis_backed)
        keys_at_thaw = _wait_for_keys(private_redis)

        def written_again() -> bool:
            return (
                _redis_writes(redis_backed) > writes_at_thaw
                and _cache_keys(private_redis) > keys_at_thaw
            )

        recovered_s = _wait_for(written_again, RECOVERY_LIMIT_S)
        time.sleep(AFTER_S)
    finally:
        private_redis.resume()
        samples = load.stop()
    phases = Phases.split(samples, frozen, thawed)
    freeze = {k: errors_frozen[k] - errors_before[k] for k in ERROR_KINDS}
    touching = [s for s in samples if s.started < thawed and s.started + s.latency_s > frozen]
    print(
        f"\n[redis freeze] callers={LOAD_CALLERS} requests={len(samples)} "
        f"before: {_latency_summary(phases.before)}; during freeze ({FREEZE_S:.0f}s): "
        f"{_latency_summary(phases.during)}; overlapping the freeze: "
        f"{_latency_summary(touching)}; after: {_latency_summary(phases.after)}; "
        f"failures={len(_failures(samples))}; freeze errors={freeze}; "
        f"new writes reached Redis {recovered_s:.2f}s after SIGCONT; slowest overlapping: "
        + ", ".join(
            f"{s.latency_s * 1e3:.0f}ms at +{s.started - frozen:.2f}s"
            for s in sorted(touching, key=lambda s: -s.latency_s)[:3]
        )
    )
    assert not _failures(samples), _failures(samples)[:10]
    assert len(phases.during) >= 5, f"the load did not hold during the freeze: {len(phases.during)}"
    slowest = max(touching, key=lambda s: s.latency_s)
    assert slowest.latency_s < FREEZE_LATENCY_BOUND_S, (
        f"a request took {slowest.latency_s:.2f}s while Redis was frozen"
    )
    assert freeze["timeout"] > 0, freeze
    assert freeze["breaker_open"] > 0, freeze  # the breaker opened: Redis skipped at once
    assert recovered_s < math.inf, f"no new write reached Redis within {RECOVERY_LIMIT_S}s"


# ---------------------------------------------------------------------------------------
# 3. A protobuf fuzz of every RPC the server registers.

SEED = 20240611
MESSAGES_PER_METHOD = 300  # messages, counting each message of a stream
CALL_TIMEOUT_S = 3.0  # the deadline of every fuzz call; heavy work past it is cut off
HANG_SLACK_S = 5.0  # a call must return within its deadline plus this
MAX_REPLIES = 20  # a streamed reply beyond this is cancelled by the caller
# Streams that never end by themselves: the caller cancels after this many replies.
OPEN_ENDED = {"/grpc.health.v1.Health/Watch": 1}
FUZZ_WORKERS = 6
FUZZ_SET = "fuzz-members"

ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)
CODE_OF_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
# Fields of a reply that carry a status code number for one item of a stream:
# ExplainStreamResponse.error.code, IndexOutcome.code, reflection's ErrorResponse.
CODE_FIELDS = ("code", "error_code")

INT32_EDGES = (0, 1, -1, 2, 3, 5, 7, 9, 16, 255, 256, 1023, 8193, 2**31 - 1, -(2**31), 2**15)
INT64_EDGES = (*INT32_EDGES, 2**53 + 1, 2**63 - 1, -(2**63))
UINT32_EDGES = (0, 1, 2, 3, 9, 255, 2**31, 2**32 - 1)
UINT64_EDGES = (*UINT32_EDGES, 2**64 - 1)
DOUBLE_EDGES = (
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    2.0,
    3.0,
    1e-300,
    -1e-300,
    1e300,
    -1e300,
    2.0**53,
    2.0**63,
    1.7976931348623157e308,
    math.inf,
    -math.inf,
    math.nan,
)
_F = FieldDescriptor
EDGES_BY_TYPE: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...] = (
    ((_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32), INT32_EDGES),
    ((_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64), INT64_EDGES),
    ((_F.TYPE_UINT32, _F.TYPE_FIXED32), UINT32_EDGES),
    ((_F.TYPE_UINT64, _F.TYPE_FIXED64), UINT64_EDGES),
    ((_F.TYPE_DOUBLE, _F.TYPE_FLOAT), DOUBLE_EDGES),
)
SMALL_NUMBERS = (0, 1, 2, 3, 4, -1, 0.5, 2.0, 1e-3)
NASTY_STRINGS = (
    "",
    " ",
    "\x00",
    "..",
    "../../etc/passwd",
    "%s%n%x",
    "a" * 300,
    "é漢字🙂",
    "-1",
    "NaN",
    "inf",
    "1e309",
    "8/255",
    "0/0",
    "layer4.0.conv1",
    "features.block3.5",
    "fc:input",
    "<final linear layer>:input",
    "camserve.v1.ExplainService",
    "camserve/v1/explain.proto",
    "grpc.health.v1.Health",
)


@dataclass(frozen=True)
class World:
    """Names the server knows (from ListModels, ListMethods, ListJobMethods and the set
    made for the fuzz), so that random messages reach past the first lookups."""

    models: tuple[str, ...]
    layers: tuple[str, ...]
    method_options: dict[str, tuple[str, ...]]  # explanation method -> its options
    job_options: dict[str, tuple[str, ...]]  # job method -> its options
    members: tuple[str, ...]
    png: bytes

    @property
    def strings(self) -> tuple[str, ...]:
        names = {*self.models, *self.layers, *self.method_options, *self.job_options}
        for options in (*self.method_options.values(), *self.job_options.values()):
            names.update(options)
        return (*sorted(names), *self.members, FUZZ_SET, *NASTY_STRINGS)


@dataclass(frozen=True)
class Case:
    """One fuzz call: a method and the raw messages it sends (one for a unary request)."""

    method: MethodDescriptor
    kind: str  # random-bytes, truncated, random-message, mutated
    messages: tuple[bytes, ...]

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"


@dataclass(frozen=True)
class Outcome:
    """How one fuzz call ended: its status, the status codes carried inside its replies
    (per item of a stream), and how long it took."""

    case: Case
    code: grpc.StatusCode
    details: str
    elapsed_s: float
    replies: int
    inner: tuple[int, ...] = ()

    def faults(self) -> frozenset[str]:
        """The statuses outside ``ALLOWED``: the call's, and any carried in a reply."""
        found = set()
        if self.code not in ALLOWED:
            found.add(self.code.name)
        for number in self.inner:
            code = CODE_OF_NUMBER.get(number)
            if code not in ALLOWED:
                found.add(f"in-reply {code.name if code else number}")
        return frozenset(found)


def _message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _submessage(f: FieldDescriptor) -> Descriptor:
    assert f.message_type is not None, f.full_name
    return f.message_type


def _is_map(f: FieldDescriptor) -> bool:
    return f.type == FieldDescriptor.TYPE_MESSAGE and bool(_submessage(f).GetOptions().map_entry)


def _inner_codes(message: Message) -> list[int]:
    """Every status code number a reply carries in a ``code``/``error_code`` field."""
    codes: list[int] = []
    for f, value in message.ListFields():
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_map(f):
                items = list(value.values())
            elif f.is_repeated:
                items = list(value)
            else:
                items = [value]
            for item in items:
                if isinstance(item, Message):
                    codes.extend(_inner_codes(item))
        elif f.name in CODE_FIELDS and f.type == FieldDescriptor.TYPE_INT32:
            codes.append(int(value))
    return codes


class Fuzzer:
    """Seeded random messages for any message type, knowing the server's names."""

    def __init__(self, rng: random.Random, world: World) -> None:
        self.rng = rng
        self.world = world

    # -- values ----------------------------------------------------------------------

    def string(self) -> str:
        if self.rng.random() < 0.6:
            return self.rng.choice(self.world.strings)
        length = self.rng.choice((1, 3, 8, 40, 200))
        alphabet = "abcXYZ019._-:/ \t\n\x7fé漢🙂"
        return "".join(self.rng.choice(alphabet) for _ in range(length))

    def bytes_value(self) -> bytes:
        roll = self.rng.random()
        png = self.world.png
        if roll < 0.35:
            return png
        if roll < 0.55:
            return png[: self.rng.randrange(1, len(png))]
        if roll < 0.65:
            return b""
        if roll < 0.75:  # a PNG with one byte flipped
            i = self.rng.randrange(len(png))
            return png[:i] + bytes([png[i] ^ 0xFF]) + png[i + 1 :]
        return self.rng.randbytes(self.rng.choice((1, 4, 16, 64, 300)))

    def scalar(self, f: FieldDescriptor) -> Any:
        t = f.type
        for types, edges in EDGES_BY_TYPE:
            if t in types:
                return self.rng.choice(edges)
        if t == FieldDescriptor.TYPE_BOOL:
            return self.rng.random() < 0.5
        if t == FieldDescriptor.TYPE_STRING:
            return self.string()
        if t == FieldDescriptor.TYPE_BYTES:
            return self.bytes_value()
        if t == FieldDescriptor.TYPE_ENUM:
            assert f.enum_type is not None
            numbers = [v.number for v in f.enum_type.values]
            return self.rng.choice([*numbers, *numbers, -1, 99, 2**31 - 1])
        raise AssertionError(f"unhandled field type {t} of {f.full_name}")

    # -- any message -----------------------------------------------------------------

    def message(self, descriptor: Descriptor, depth: int = 0) -> Message:
        """A message of ``descriptor`` with random fields set (nested to depth 3)."""
        msg = _message_class(descriptor)()
        for f in descriptor.fields:
            if self.rng.random() < 0.5:
                self.set_field(msg, f, depth)
        return msg

    def set_field(self, msg: Message, f: FieldDescriptor, depth: int) -> None:
        """Give ``f`` of ``msg`` a random value (replacing, extending or clearing it)."""
        if depth > 3 or self.rng.random() < 0.08:
            msg.ClearField(f.name)
            return
        # A value this field's Python type refuses (e.g. 1e300 into a float) is skipped.
        with contextlib.suppress(ValueError, TypeError, OverflowError):
            self._set_field(msg, f, depth)

    def _set_field(self, msg: Message, f: FieldDescriptor, depth: int) -> None:
        is_message = f.type == FieldDescriptor.TYPE_MESSAGE
        container = getattr(msg, f.name)
        if _is_map(f):
            key_f = _submessage(f).fields_by_name["key"]
            value_f = _submessage(f).fields_by_name["value"]
            for _ in range(self.rng.choice((0, 1, 1, 2, 4))):
                key = self.scalar(key_f)
                if value_f.type == FieldDescriptor.TYPE_MESSAGE:
                    container[key].CopyFrom(self.message(_submessage(value_f), depth + 1))
                else:
                    container[key] = self.scalar(value_f)
            return
        if f.is_repeated:
            for _ in range(self.rng.choice((0, 1, 1, 2, 3, 5))):
                if is_message:
                    container.add().CopyFrom(self.message(_submessage(f), depth + 1))
                else:
                    container.append(self.scalar(f))
            return
        if is_message:
            container.CopyFrom(self.message(_submessage(f), depth + 1))
        else:
            setattr(msg, f.name, self.scalar(f))

    def mutate(self, msg: Message, depth: int = 0) -> None:
        """Change one random field somewhere in ``msg`` (descending into submessages)."""
        fields = cast("Sequence[FieldDescriptor]", msg.DESCRIPTOR.fields)
        if not fields:
            return
        f = self.rng.choice(fields)
        plain_message = (
            f.type == FieldDescriptor.TYPE_MESSAGE and not f.is_repeated and not _is_map(f)
        )
        if plain_message and depth < 3 and self.rng.random() < 0.6:
            self.mutate(getattr(msg, f.name), depth + 1)
        else:
            self.set_field(msg, f, depth)

    # -- messages each RPC accepts (or nearly) ---------------------------------------

    def option_value(self) -> pb.OptionValue:
        """A method option's value: mostly small numbers (so heavy work stays rare), else
        an edge number, a string, a flag or a list."""
        roll = self.rng.random()
        if roll < 0.45:
            return pb.OptionValue(number=self.rng.choice(SMALL_NUMBERS))
        if roll < 0.7:
            return pb.OptionValue(number=self.rng.choice(DOUBLE_EDGES))
        if roll < 0.8:
            return pb.OptionValue(text=self.string())
        if roll < 0.87:
            return pb.OptionValue(flag=self.rng.random() < 0.5)
        if roll < 0.9:
            return pb.OptionValue()  # no kind set
        pool = (*SMALL_NUMBERS, *DOUBLE_EDGES)
        values = [self.rng.choice(pool) for _ in range(self.rng.choice((0, 1, 2, 2, 3, 5)))]
        return pb.OptionValue(numbers=pb.NumberList(values=values))

    def options(self, target: Any, known: Sequence[str]) -> None:
        """Set zero to two options on ``target`` (a map of OptionValue), mostly known ones."""
        for _ in range(self.rng.choice((0, 1, 1, 2))):
            name = self.rng.choice(known) if known and self.rng.random() < 0.85 else self.string()
            target[name].CopyFrom(self.option_value())

    def image_input(self) -> pb.ImageInput:
        if self.rng.random() < 0.85:
            return pb.ImageInput(encoded=self.world.png)
        rng = np.random.default_rng(self.rng.randrange(1 << 30))
        size = self.rng.choice((0, 1, 8, 64))
        array = rng.standard_normal((3, size, size)).astype(np.float32)
        shape = self.rng.choice(([3, size, size], [size, size], [3, size, size, 1], [-3, 2, 2]))
        return pb.ImageInput(
            tensor=pb.Tensor(shape=shape, dtype=pb.DTYPE_FLOAT32, data=array.tobytes())
        )

    def explain(self) -> pb.ExplainRequest:
        w, rng = self.world, self.rng
        method = rng.choice(sorted(w.method_options))
        message = pb.ExplainRequest(
            request_id=str(rng.randrange(1000)),
            model=rng.choice(w.models),
            method=method,
            input=self.image_input(),
            targets=pb.Targets(top_k=1) if rng.random() < 0.7 else pb.Targets(classes=[0, 1]),
        )
        if rng.random() < 0.3:
            message.layer = rng.choice(w.layers)
        if rng.random() < 0.6:
            self.options(message.options, w.method_options[method])
        if rng.random() < 0.2:
            side = rng.choice((1, 8, 64))
            message.output.CopyFrom(pb.OutputOptions(height=side, width=side))
        return message

    def visualize(self) -> jpb.VisualizeRequest:
        w, rng = self.world, self.rng
        method = rng.choice(sorted(w.job_options))
        message = jpb.VisualizeRequest(
            model=rng.choice(w.models),
            method=method,
            input=pb.ImageInput(encoded=w.png),
            preview_every=rng.choice((0, 1)),
        )
        if rng.random() < 0.5:
            message.target = rng.choice((0, 1, 9))
        else:
            message.channel = rng.choice((0, 1))
        if rng.random() < 0.5:
            message.style.CopyFrom(pb.ImageInput(encoded=w.png))
        self.options(message.options, w.job_options[method])
        # Few steps, so that an accepted job is short; a mutation may still change it.
        message.options["steps"].CopyFrom(pb.OptionValue(number=rng.choice((1, 2))))
        return message

    def valid(self, method: MethodDescriptor) -> Message:
        """A message the RPC accepts, or one that reaches well past its first checks."""
        w, rng = self.world, self.rng
        name = method.name
        message: Message
        if name in ("Explain", "ExplainStream"):
            message = self.explain()
        elif name == "Embed":
            message = pb.EmbedRequest(model=rng.choice(w.models), input=self.image_input())
        elif name == "Activations":
            message = pb.ActivationsRequest(
                model=rng.choice(w.models),
                input=self.image_input(),
                top_k=2,
                mode=pb.ACTIVATIONS_MODE_FEATURE_MAPS,
            )
        elif name == "Filters":
            message = pb.FiltersRequest(model=rng.choice(w.models))
        elif name == "Visualize":
            message = self.visualize()
        elif name == "IndexImages":
            images = [ipb.SetImage(id=f"m{rng.randrange(50)}", encoded=self.bytes_value())]
            sets = (FUZZ_SET, "fuzz-a", "fuzz-b")
            message = ipb.IndexImagesRequest(set=rng.choice(sets), model="demo", images=images)
        elif name == "TopActivating":
            message = ipb.TopActivatingRequest(set=FUZZ_SET, channel=rng.randrange(4), k=3)
        elif name == "NearestNeighbours":
            if rng.random() < 0.5:
                message = ipb.NearestNeighboursRequest(set=FUZZ_SET, id=rng.choice(w.members))
            else:
                message = ipb.NearestNeighboursRequest(set=FUZZ_SET, image=w.png)
        elif name == "EmbeddingMap":
            projection = rng.choice((ipb.PROJECTION_METHOD_PCA, ipb.PROJECTION_METHOD_TSNE))
            message = ipb.EmbeddingMapRequest(set=FUZZ_SET, method=projection)
        elif name in ("DescribeSet", "DeleteSet"):
            message = _message_class(method.input_type)()
            message.set = rng.choice(("fuzz-a", "fuzz-b", "fuzz-c"))  # type: ignore[attr-defined]
        elif name in ("Check", "Watch"):
            service = rng.choice(("", "camserve.v1.ExplainService", self.string()))
            message = health_pb2.HealthCheckRequest(service=service)
        elif name == "ServerReflectionInfo":
            message = self.reflection()
        else:  # a method without parameters, or one this fuzzer has no template for
            message = _message_class(method.input_type)()
        return message

    def reflection(self) -> Message:
        roll = self.rng.random()
        ask: dict[str, Any]
        if roll < 0.25:
            ask = {"list_services": ""}
        elif roll < 0.5:
            ask = {"file_containing_symbol": self.string()}
        elif roll < 0.7:
            ask = {"file_by_filename": self.string()}
        elif roll < 0.85:
            ask = {"all_extension_numbers_of_type": self.string()}
        else:
            number = self.rng.choice(INT32_EDGES)
            extension = reflection_pb2.ExtensionRequest(
                containing_type=self.string(), extension_number=number
            )
            ask = {"file_containing_extension": extension}
        message: Message = reflection_pb2.ServerReflectionRequest(**ask)
        return message

    # -- one raw message of each kind ------------------------------------------------

    def raw(self, method: MethodDescriptor, kind: str) -> bytes:
        if kind == "random-bytes":
            return self.rng.randbytes(self.rng.choice((0, 1, 2, 5, 16, 64, 200)))
        if kind == "truncated":
            whole = self.valid(method).SerializeToString()
            if len(whole) < 2:
                return whole + self.rng.randbytes(3)
            return whole[: self.rng.randrange(1, len(whole))]
        if kind == "random-message":
            return self.message(method.input_type).SerializeToString()
        if kind == "mutated":
            msg = self.valid(method)
            for _ in range(self.rng.choice((0, 1, 1, 2, 3))):
                self.mutate(msg)
            return msg.SerializeToString()
        raise AssertionError(kind)


KINDS = {"random-bytes": 0.2, "truncated": 0.15, "random-message": 0.25, "mutated": 0.4}


def _cases(methods: Sequence[MethodDescriptor], fuzzer: Fuzzer) -> list[Case]:
    """``MESSAGES_PER_METHOD`` messages for each method, mixed over the four kinds; a
    request stream carries one to three of them, after a valid first message at times."""
    cases: list[Case] = []
    kinds, weights = list(KINDS), list(KINDS.values())
    for method in methods:
        sent = 0
        while sent < MESSAGES_PER_METHOD:
            kind = fuzzer.rng.choices(kinds, weights)[0]
            n = fuzzer.rng.choice((1, 1, 2, 3)) if method.client_streaming else 1
            messages = tuple(fuzzer.raw(method, kind) for _ in range(n))
            if method.client_streaming and kind != "random-bytes" and fuzzer.rng.random() < 0.3:
                messages = (fuzzer.valid(method).SerializeToString(), *messages)
            cases.append(Case(method, kind, messages))
            sent += len(messages)
    return cases


def _call(channel: grpc.Channel, case: Case) -> Outcome:
    """Send ``case`` through a generic call (bytes in, bytes out, no serializers), wait
    for its status, and read the status codes its replies carry."""
    method = case.method
    started = time.monotonic()
    replies: list[bytes] = []
    code = grpc.StatusCode.OK
    details = ""
    most = OPEN_ENDED.get(case.path, MAX_REPLIES)
    try:
        if not method.client_streaming and not method.server_streaming:
            call = channel.unary_unary(case.path)
            replies.append(call(case.messages[0], timeout=CALL_TIMEOUT_S))
        elif not method.client_streaming:
            stream = channel.unary_stream(case.path)(case.messages[0], timeout=CALL_TIMEOUT_S)
            code = _drain(stream, most, replies)
        elif not method.server_streaming:
            call = channel.stream_unary(case.path)
            replies.append(call(iter(case.messages), timeout=CALL_TIMEOUT_S))
        else:
            stream = channel.stream_stream(case.path)(iter(case.messages), timeout=CALL_TIMEOUT_S)
            code = _drain(stream, most, replies)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    elapsed = time.monotonic() - started
    reply_class = _message_class(method.output_type)
    inner = [c for raw in replies for c in _inner_codes(reply_class.FromString(raw))]
    return Outcome(case, code, details, elapsed, len(replies), tuple(inner))


def _drain(stream: Any, most: int, replies: list[bytes]) -> grpc.StatusCode:
    """Read a reply stream into ``replies`` to its end, or cancel it after ``most``."""
    for reply in stream:
        replies.append(reply)
        if len(replies) >= most:
            stream.cancel()
            return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK


def _registered_methods(address: str) -> list[MethodDescriptor]:
    """Every method of every service the server lists through reflection, described by
    the default descriptor pool (filled by the imports of the ``*_pb2`` modules above)."""
    with grpc.insecure_channel(address) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(reflection.ServerReflectionInfo(iter([ask]), timeout=10))
    names = [s.name for s in reply.list_services_response.service]
    pool = descriptor_pool.Default()
    return [method for name in names for method in pool.FindServiceByName(name).methods]


def _world(address: str) -> World:
    with grpc.insecure_channel(address) as channel:
        explain = explain_pb2_grpc.ExplainServiceStub(channel)
        models = explain.ListModels(pb.ListModelsRequest(), timeout=10).models
        methods = explain.ListMethods(pb.ListMethodsRequest(), timeout=10).methods
        list_jobs = channel.unary_unary(
            "/camserve.v1.VisualizeService/ListJobMethods",
            request_serializer=jpb.ListJobMethodsRequest.SerializeToString,
            response_deserializer=jpb.ListJobMethodsResponse.FromString,
        )
        jobs = list_jobs(jpb.ListJobMethodsRequest(), timeout=10).methods
    rng = np.random.default_rng(7)
    return World(
        models=tuple(m.name for m in models),
        layers=tuple(sorted({layer for m in models for layer in m.layers[-3:]})),
        method_options={m.id: tuple(o.name for o in m.options) for m in methods},
        job_options={j.id: tuple(o.name for o in j.options) for j in jobs},
        members=("m0", "m1", "m2", "m3"),
        png=png_bytes(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)),
    )


def _index_members(address: str, world: World) -> None:
    """Create ``FUZZ_SET`` with a few members, so set queries reach past the lookup."""
    rng = np.random.default_rng(11)
    images = [
        ipb.SetImage(id=m, encoded=png_bytes(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)))
        for m in world.members
    ]
    message = ipb.IndexImagesRequest(set=FUZZ_SET, model="demo", images=images)
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream(
            "/camserve.v1.ImageSetService/IndexImages",
            request_serializer=ipb.IndexImagesRequest.SerializeToString,
            response_deserializer=ipb.IndexImagesResponse.FromString,
        )
        replies = list(call(iter([message]), timeout=60))
    assert replies[-1].done and replies[-1].indexed == len(images), replies[-1]


def _shorten(message: Message) -> None:
    """Replace every long bytes value in ``message`` (an image, a tensor) by its length."""
    for f, value in message.ListFields():
        if f.type == FieldDescriptor.TYPE_BYTES and not f.is_repeated and len(value) > 24:
            setattr(message, f.name, f"<{len(value)} bytes>".encode())
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            items = value.values() if _is_map(f) else value if f.is_repeated else [value]
            for item in items:
                if isinstance(item, Message):
                    _shorten(item)


def _describe(case: Case, message: bytes) -> str:
    """A message as text when it parses as the RPC's request type (long bytes values by
    their length), else as hex."""
    try:
        parsed = _message_class(case.method.input_type).FromString(message)
    except DecodeError:
        return f"bytes {message[:120].hex()}"
    _shorten(parsed)
    text = text_format.MessageToString(parsed, as_one_line=True, as_utf8=True)
    return f"{case.method.input_type.name} {{{text[:400]}}}"


def _minimise(channel: grpc.Channel, outcome: Outcome) -> str:
    """The offending message without each top-level field whose removal keeps the fault
    (for single-message cases that parse), described."""
    case = outcome.case
    if len(case.messages) != 1:
        return " | ".join(_describe(case, m) for m in case.messages)
    try:
        parsed = _message_class(case.method.input_type).FromString(case.messages[0])
    except DecodeError:
        return _describe(case, case.messages[0])
    for f, _ in parsed.ListFields():
        trial = _message_class(case.method.input_type)()
        trial.CopyFrom(parsed)
        trial.ClearField(f.name)
        again = _call(channel, Case(case.method, case.kind, (trial.SerializeToString(),)))
        if again.faults() & outcome.faults():
            parsed = trial
    return _describe(case, parsed.SerializeToString())


@pytest.fixture(scope="module")
def fuzz_target(test_config: Path) -> Iterator[ServerThread]:
    """A server of this module's own (demo, r18, mnv3; no Redis): the fuzz and the tests
    of its finds create image sets and jobs."""
    thread = ServerThread(settings_for(test_config))
    thread.start()
    yield thread
    thread.stop()


def _settled(server: ServerThread) -> bool:
    assert server.runtime is not None
    registry = server.runtime.metrics.registry
    inflight = metric_value(registry, "camserve_inflight_requests")
    jobs = metric_value(registry, "camserve_jobs_running")
    return inflight == 0 and jobs == 0


def _table(outcomes: Sequence[Outcome]) -> dict[str, tuple[int, Counter[str], Counter[str]]]:
    """Per RPC path: messages sent, call statuses, and status codes carried in replies."""
    table: dict[str, tuple[int, Counter[str], Counter[str]]] = {}
    for o in outcomes:
        sent, statuses, inner = table.get(o.case.path, (0, Counter(), Counter()))
        statuses[o.code.name] += 1
        for number in o.inner:
            code = CODE_OF_NUMBER.get(number)
            inner[code.name if code else str(number)] += 1
        table[o.case.path] = (sent + len(o.case.messages), statuses, inner)
    return table


@pytest.mark.slow
def test_fuzzed_messages_to_every_rpc_get_a_proper_status(
    fuzz_target: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    """Proves: for every method of every registered service (ExplainService,
    VisualizeService, ImageSetService, health, reflection; found by reflection), a few
    hundred seeded random messages each (random bytes, truncated valid messages, random
    messages, valid messages with random field values; request streams of one to four
    messages) are each answered within the call's deadline with a status in ``ALLOWED``,
    never UNKNOWN or INTERNAL, and so is every status carried inside a reply (an
    ExplainStream item's error, an IndexImages outcome, a reflection error); afterwards
    the server answers health SERVING and a normal Explain, and settles (no request in
    flight, no job running)."""
    address = fuzz_target.address
    methods = _registered_methods(address)
    services = {m.containing_service.full_name for m in methods}
    assert {
        "camserve.v1.ExplainService",
        "camserve.v1.VisualizeService",
        "camserve.v1.ImageSetService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services, services
    world = _world(address)
    _index_members(address, world)
    cases = _cases(methods, Fuzzer(random.Random(SEED), world))
    # Interleave every RPC, but delete sets last, so set queries meet their members.
    head = [c for c in cases if c.method.name != "DeleteSet"]
    random.Random(SEED + 1).shuffle(head)
    cases = head + [c for c in cases if c.method.name == "DeleteSet"]

    caplog.set_level(logging.ERROR)
    started = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        with ThreadPoolExecutor(FUZZ_WORKERS) as pool:
            outcomes = list(pool.map(lambda c: _call(channel, c), cases))
        took = time.monotonic() - started
        faults: dict[tuple[str, frozenset[str]], list[Outcome]] = {}
        for o in outcomes:
            if o.faults():
                faults.setdefault((o.case.path, o.faults()), []).append(o)
        reports = [
            f"{path} -> {sorted(codes)} x{len(found)} ({found[0].case.kind}): "
            f"{found[0].details!r}; minimal: {_minimise(channel, found[0])}"
            for (path, codes), found in sorted(faults.items(), key=lambda kv: kv[0][0])
        ]
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        reply = explain_pb2_grpc.ExplainServiceStub(channel).Explain(
            request("demo", "gradcam", random_image(5, (64, 64))), timeout=30
        )

    table = _table(outcomes)
    slowest = max(outcomes, key=lambda o: o.elapsed_s)
    print(f"\n[fuzz] {len(outcomes)} calls, {sum(t[0] for t in table.values())} messages")
    print(f"  in {took:.1f}s; slowest call {slowest.elapsed_s:.2f}s ({slowest.case.path})")
    for path, (sent, statuses, inner) in sorted(table.items()):
        print(f"  {path}: {sent} messages, {dict(statuses)}, in replies {dict(inner)}")
    for o in outcomes:
        if o.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            print(f"  past the deadline: {o.case.path} {_describe(o.case, o.case.messages[-1])}")
    server_errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not reports, "\n".join([*reports, "server log:", *server_errors[:20]])
    assert not server_errors, server_errors[:20]  # nothing unexpected, even when answered
    hung = [o for o in outcomes if o.elapsed_s > CALL_TIMEOUT_S + HANG_SLACK_S]
    assert not hung, [(o.case.path, round(o.elapsed_s, 2)) for o in hung[:10]]
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert reply.heatmaps
    assert _wait_for(lambda: _settled(fuzz_target), 30.0) < math.inf, "requests or jobs left"
    assert all(sent >= MESSAGES_PER_METHOD for sent, _, _ in table.values()), table
    assert len(table) == len(methods)


# The fuzz's finds, each fixed in the server and kept fixed here.


def test_health_list_answers_unimplemented_and_refuses_malformed_requests(
    fuzz_target: ServerThread,
) -> None:
    """Proves: ``grpc.health.v1.Health/List`` (in the health proto, so registered and
    listed by reflection, but not implemented by grpcio-health-checking) answers
    UNIMPLEMENTED, and a malformed request to it is INVALID_ARGUMENT. It was UNKNOWN,
    with a traceback in the log for every call, malformed or not."""
    with grpc.insecure_channel(fuzz_target.address) as channel:
        call = channel.unary_unary("/grpc.health.v1.Health/List")
        for payload, expected in (
            (b"", grpc.StatusCode.UNIMPLEMENTED),
            (b"\x0f not a protobuf message", grpc.StatusCode.INVALID_ARGUMENT),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call(payload, timeout=10)
            assert caught.value.code() == expected, caught.value.details()


@pytest.mark.parametrize("shape", [(0, 0), (3, 0, 0), (3, 64, 0), (1, 3, 0, 64)])
def test_a_tensor_input_with_a_zero_dimension_is_invalid_argument(
    fuzz_target: ServerThread, shape: tuple[int, ...]
) -> None:
    """Proves: a tensor input with a zero in its shape is INVALID_ARGUMENT on Explain and
    Activations. It was INTERNAL: hashing the empty tensor for its cache key raised
    ``TypeError`` (``memoryview.cast`` refuses a shape with a zero) before the shape
    check ran."""
    tensor = pb.ImageInput(tensor=pb.Tensor(shape=list(shape), dtype=pb.DTYPE_FLOAT32))
    with grpc.insecure_channel(fuzz_target.address) as channel:
        client = explain_pb2_grpc.ExplainServiceStub(channel)
        calls: list[Callable[[], object]] = [
            lambda: client.Explain(pb.ExplainRequest(model="demo", input=tensor), timeout=10),
            lambda: client.Activations(
                pb.ActivationsRequest(model="r18", input=tensor), timeout=10
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "tensor input" in (caught.value.details() or "")


def test_an_embedding_map_takes_a_negative_seed(fuzz_target: ServerThread) -> None:
    """Proves: EmbeddingMap's ``seed`` (an int32) may be negative, for t-SNE and for the
    ``max_points`` sample, and the same seed gives the same map. A negative seed was
    INTERNAL: scikit-learn's t-SNE and numpy's generator take seeds in [0, 2**32)."""
    rng = np.random.default_rng(3)
    members = [
        ipb.SetImage(id=f"n{i}", encoded=png_bytes(rng.integers(0, 256, (24, 24, 3), np.uint8)))
        for i in range(6)  # t-SNE runs from five members on; fewer fall back to PCA
    ]
    first = ipb.IndexImagesRequest(set="negative-seed", model="demo", images=members)
    with grpc.insecure_channel(fuzz_target.address) as channel:
        sets = imagesets_pb2_grpc.ImageSetServiceStub(channel)
        (*_, done) = sets.IndexImages(iter([first]), timeout=60)
        assert done.done and done.indexed == len(members), done
        for method in (ipb.PROJECTION_METHOD_TSNE, ipb.PROJECTION_METHOD_PCA):
            for seed in (-1, -(2**31)):
                ask = ipb.EmbeddingMapRequest(
                    set="negative-seed", method=method, seed=seed, max_points=3
                )
                once = sets.EmbeddingMap(ask, timeout=60)
                again = sets.EmbeddingMap(ask, timeout=60)
                assert len(once.points) == 3 and once.projected == len(members)
                assert once == again
