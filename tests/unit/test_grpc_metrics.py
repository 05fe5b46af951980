"""The standard gRPC server metrics ``ErrorInterceptor`` records, on a bare grpc.aio server.

Each call is counted started and handled, under the status its caller really got: a
mapped error's, an abort's or ``set_code``'s, CANCELLED or DEADLINE_EXCEEDED when the
call ended before the handler; the dashboard names only metrics the server exports, and
the metrics add up across processes (Prometheus multiprocess mode).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc import aio
from grpc_health.v1.health_pb2 import HealthCheckRequest as Request
from grpc_health.v1.health_pb2 import HealthCheckResponse as Reply

from camserve_server.errors import NotFound
from camserve_server.rpc.interceptors import ErrorInterceptor
from camserve_server.runtime import metrics as names
from camserve_server.runtime.metrics import Metrics

SERVICE = "test.Calls"
SERVING = Reply.SERVING
T = TypeVar("T")
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "camserve-dashboard.json"


async def _answer(request: Request, context: aio.ServicerContext) -> Reply:
    if request.service == "missing":
        raise NotFound("no thing called 'missing'")
    if request.service == "crash":
        raise RuntimeError("a bug")
    if request.service == "set-code":
        context.set_code(grpc.StatusCode.ALREADY_EXISTS)
        return Reply()
    if request.service.startswith("sleep "):
        await asyncio.sleep(float(request.service.split()[1]))
    return Reply(status=SERVING)


async def _late(_request: Request, _context: aio.ServicerContext) -> Reply:
    """A reply made after the caller's deadline, without yielding to grpc meanwhile."""
    time.sleep(0.3)
    return Reply(status=SERVING)


async def _three(request: Request, _context: aio.ServicerContext) -> AsyncIterator[Reply]:
    for _ in range(3):
        yield Reply(status=SERVING)
    if request.service == "missing":
        raise NotFound("no thing called 'missing'")


async def _count(requests: AsyncIterator[Request], _context: aio.ServicerContext) -> Reply:
    seen = [message async for message in requests]
    return Reply(status=SERVING if seen else Reply.UNKNOWN)


HANDLERS = {
    "Answer": grpc.unary_unary_rpc_method_handler(
        _answer, Request.FromString, Reply.SerializeToString
    ),
    "Late": grpc.unary_unary_rpc_method_handler(_late, Request.FromString, Reply.SerializeToString),
    "Three": grpc.unary_stream_rpc_method_handler(
        _three, Request.FromString, Reply.SerializeToString
    ),
    "Count": grpc.stream_unary_rpc_method_handler(
        _count, Request.FromString, Reply.SerializeToString
    ),
}


class Served:
    """A grpc.aio server with ``ErrorInterceptor`` alone, on its own loop and thread."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server, port = self._run(self._start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    async def _start(self) -> tuple[aio.Server, int]:
        server = aio.server(interceptors=[ErrorInterceptor(self.metrics)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def stop(self) -> None:
        self.channel.close()
        self._run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def value(self, name: str, grpc_type: str, method: str, **extra: str) -> float:
        labels = {"grpc_type": grpc_type, "grpc_service": SERVICE, "grpc_method": method, **extra}
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def handled(self, grpc_type: str, method: str, code: str) -> float:
        return self.value(names.GRPC_HANDLED, grpc_type, method, grpc_code=code)

    def unary(self, method: str, service: str, timeout: float = 10) -> None:
        call = self.channel.unary_unary(f"/{SERVICE}/{method}")
        call(Request(service=service).SerializeToString(), timeout=timeout)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    server = Served()
    yield server
    server.stop()


def _wait_for(condition: Callable[[], bool], timeout: float = 10) -> bool:
    """Whether ``condition`` holds within ``timeout``: an abort sends its status at once,
    so the caller may see it a moment before the server has counted the call."""
    stop = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > stop:
            return False
        time.sleep(0.02)
    return True


def _fails(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    code: grpc.StatusCode = caught.value.code()
    return code


def test_a_served_call_counts_started_handled_and_timed(served: Served) -> None:
    before = {
        name: served.value(name, "unary", "Answer")
        for name in (names.GRPC_STARTED, names.GRPC_HANDLING + "_count")
    }
    ok = served.handled("unary", "Answer", "OK")
    served.unary("Answer", "ok")
    assert _wait_for(lambda: served.handled("unary", "Answer", "OK") == ok + 1)
    for name, value in before.items():
        assert served.value(name, "unary", "Answer") == value + 1, name


@pytest.mark.parametrize(
    ("service", "code"),
    [("missing", "NOT_FOUND"), ("crash", "INTERNAL"), ("set-code", "ALREADY_EXISTS")],
)
def test_a_failed_call_counts_the_status_the_caller_got(
    served: Served, service: str, code: str
) -> None:
    before = served.handled("unary", "Answer", code)
    got = _fails(lambda: served.unary("Answer", service))
    assert got.name == code
    assert _wait_for(lambda: served.handled("unary", "Answer", code) == before + 1)


def test_a_malformed_request_counts_invalid_argument(served: Served) -> None:
    before = served.handled("unary", "Answer", "INVALID_ARGUMENT")
    call = served.channel.unary_unary(f"/{SERVICE}/Answer")
    assert (
        _fails(lambda: call(b"\x0f not protobuf", timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert _wait_for(lambda: served.handled("unary", "Answer", "INVALID_ARGUMENT") == before + 1)


@pytest.mark.parametrize(
    ("method", "service"), [("Answer", "sleep 5"), ("Late", "")], ids=["cancelled", "too-late"]
)
def test_a_passed_deadline_counts_deadline_exceeded(
    served: Served, method: str, service: str
) -> None:
    before = {code: served.handled("unary", method, code) for code in ("OK", "DEADLINE_EXCEEDED")}
    got = _fails(lambda: served.unary(method, service, timeout=0.2))
    assert got == grpc.StatusCode.DEADLINE_EXCEEDED
    late = before["DEADLINE_EXCEEDED"] + 1
    assert _wait_for(lambda: served.handled("unary", method, "DEADLINE_EXCEEDED") == late)
    assert served.handled("unary", method, "OK") == before["OK"]


def test_a_cancelled_call_counts_cancelled(served: Served) -> None:
    before = served.handled("unary", "Answer", "CANCELLED")
    future = served.channel.unary_unary(f"/{SERVICE}/Answer").future(
        Request(service="sleep 5").SerializeToString(), timeout=10
    )
    assert _wait_for(lambda: served.value(names.GRPC_STARTED, "unary", "Answer") > 0)
    time.sleep(0.2)
    future.cancel()
    assert _wait_for(lambda: served.handled("unary", "Answer", "CANCELLED") == before + 1)


def test_streams_count_their_messages_and_status(served: Served) -> None:
    sent = served.value(names.GRPC_SENT, "server_stream", "Three")
    replies = served.channel.unary_stream(f"/{SERVICE}/Three")
    assert len(list(replies(Request(service="ok").SerializeToString(), timeout=10))) == 3
    assert _wait_for(lambda: served.handled("server_stream", "Three", "OK") >= 1)
    assert served.value(names.GRPC_SENT, "server_stream", "Three") == sent + 3

    def read_missing() -> None:
        list(replies(Request(service="missing").SerializeToString(), timeout=10))

    assert _fails(read_missing) == grpc.StatusCode.NOT_FOUND
    assert _wait_for(lambda: served.handled("server_stream", "Three", "NOT_FOUND") == 1)

    received = served.value(names.GRPC_RECEIVED, "client_stream", "Count")
    count = served.channel.stream_unary(f"/{SERVICE}/Count")
    count(iter([Request().SerializeToString()] * 4), timeout=10)
    assert served.value(names.GRPC_RECEIVED, "client_stream", "Count") == received + 4
    assert _wait_for(lambda: served.handled("client_stream", "Count", "OK") >= 1)


def test_a_path_nothing_serves_makes_no_series(served: Served) -> None:
    made_up = served.channel.unary_unary(f"/{SERVICE}/MadeUp-7f3a")
    assert _fails(lambda: made_up(b"", timeout=10)) == grpc.StatusCode.UNIMPLEMENTED
    exposition = "\n".join(
        str(sample.labels)
        for family in served.metrics.registry.collect()
        for sample in family.samples
    )
    assert "MadeUp" not in exposition


def test_the_dashboard_names_only_grpc_metrics_the_server_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = "\n".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    named = set(re.findall(r"\bgrpc_server_[a-z_]*[a-z]", exprs))
    exported: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "histogram":
            exported |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        elif family.type == "counter":
            exported.add(family.name + "_total")
    assert {names.GRPC_HANDLED, names.GRPC_HANDLING + "_bucket"} <= named
    assert named <= exported, sorted(named - exported)


MULTIPROCESS = """
import sys
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from camserve_server.runtime.metrics import GRPC_HANDLED, GRPC_HANDLING, Metrics
labels = {"grpc_type": "unary", "grpc_service": "s.S", "grpc_method": "M"}
if sys.argv[1] == "record":
    series = Metrics().rpc_series("unary", "s.S", "M")
    series.started.inc()
    series.handled("OK", 0.01)
else:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    print(registry.get_sample_value(GRPC_HANDLED, {**labels, "grpc_code": "OK"}),
          registry.get_sample_value(GRPC_HANDLING + "_count", labels))
"""


def test_the_metrics_add_up_across_processes(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run = [sys.executable, "-c", MULTIPROCESS]
    for _ in range(2):
        subprocess.run([*run, "record"], env=env, check=True, timeout=60)
    summed = subprocess.run(
        [*run, "read"], env=env, check=True, timeout=60, capture_output=True, text=True
    )
    assert summed.stdout.split() == ["2.0", "2.0"]
