"""The standard gRPC server metrics of a real server behind a token: every RPC is counted
under its service and method with the status its caller got, auth's refusals included;
a path nothing serves never becomes a label."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rpc_helpers import metric_value, request, tensor_input

from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc, jobs_pb2, jobs_pb2_grpc
from camserve_server.runtime.metrics import GRPC_HANDLED, GRPC_RECEIVED, GRPC_SENT, GRPC_STARTED
from server_harness import ServerThread, settings_for

TOKEN = "metrics-token"
WITH_TOKEN = (("authorization", f"Bearer {TOKEN}"),)
EXPLAIN = "camserve.v1.ExplainService"


@pytest.fixture(scope="module")
def guarded() -> Iterator[ServerThread]:
    """The demo model behind a bearer token."""
    thread = ServerThread(settings_for(None, auth_tokens=(TOKEN,)))
    thread.start()
    yield thread
    thread.stop()


def _value(server: ServerThread, name: str, **labels: str) -> float:
    assert server.runtime is not None
    return metric_value(server.runtime.metrics.registry, name, labels)


def _handled(server: ServerThread, grpc_type: str, service: str, method: str, code: str) -> float:
    labels = {"grpc_type": grpc_type, "grpc_service": service, "grpc_method": method}
    return _value(server, GRPC_HANDLED, **labels, grpc_code=code)


def _counts_one_more(
    server: ServerThread, call: Callable[[], object], grpc_type: str, path: str, code: str
) -> None:
    """``call`` (which may fail) is counted once handled at ``path`` with ``code``: soon
    after the caller has its status, which an abort sends at once."""
    service, method = path.split("/")
    before = _handled(server, grpc_type, service, method, code)
    got = "OK"
    try:
        call()
    except grpc.RpcError as error:
        got = error.code().name
    assert got == code
    stop = time.monotonic() + 10
    while _handled(server, grpc_type, service, method, code) != before + 1:
        assert time.monotonic() < stop, f"{path} {code} not counted"
        time.sleep(0.02)


def _explain(server: ServerThread) -> explain_pb2_grpc.ExplainServiceStub:
    return explain_pb2_grpc.ExplainServiceStub(grpc.insecure_channel(server.address))


def test_list_models_counts_ok(guarded: ServerThread) -> None:
    labels = {"grpc_type": "unary", "grpc_service": EXPLAIN, "grpc_method": "ListModels"}
    started = _value(guarded, GRPC_STARTED, **labels)
    client = _explain(guarded)
    call = partial(client.ListModels, pb.ListModelsRequest(), metadata=WITH_TOKEN, timeout=10)
    _counts_one_more(guarded, call, "unary", f"{EXPLAIN}/ListModels", "OK")
    assert _value(guarded, GRPC_STARTED, **labels) == started + 1


def test_an_unknown_model_counts_not_found(guarded: ServerThread) -> None:
    client = _explain(guarded)
    unknown = request("no-such-model", "gradcam", tensor_input(1))
    call = partial(client.Explain, unknown, metadata=WITH_TOKEN, timeout=10)
    _counts_one_more(guarded, call, "unary", f"{EXPLAIN}/Explain", "NOT_FOUND")


def test_a_malformed_request_counts_invalid_argument(guarded: ServerThread) -> None:
    raw = grpc.insecure_channel(guarded.address).unary_unary(f"/{EXPLAIN}/Explain")
    call = partial(raw, b"\x0f not a protobuf message", metadata=WITH_TOKEN, timeout=10)
    _counts_one_more(guarded, call, "unary", f"{EXPLAIN}/Explain", "INVALID_ARGUMENT")


def test_a_stream_counts_its_messages_and_status(guarded: ServerThread) -> None:
    labels = {"grpc_type": "bidi_stream", "grpc_service": EXPLAIN, "grpc_method": "ExplainStream"}
    received, sent = (_value(guarded, name, **labels) for name in (GRPC_RECEIVED, GRPC_SENT))
    asks = [request("demo", "gradcam", tensor_input(seed), classes=(0,)) for seed in (1, 2)]
    for i, ask in enumerate(asks):
        ask.request_id = f"r{i}"
    client = _explain(guarded)

    def call() -> None:
        replies = list(client.ExplainStream(iter(asks), metadata=WITH_TOKEN, timeout=60))
        assert sorted(r.request_id for r in replies) == ["r0", "r1"]

    _counts_one_more(guarded, call, "bidi_stream", f"{EXPLAIN}/ExplainStream", "OK")
    assert _value(guarded, GRPC_RECEIVED, **labels) == received + 2
    assert _value(guarded, GRPC_SENT, **labels) == sent + 2


def test_a_call_without_a_token_counts_unauthenticated(guarded: ServerThread) -> None:
    client = _explain(guarded)
    call = partial(client.ListModels, pb.ListModelsRequest(), timeout=10)
    _counts_one_more(guarded, call, "unary", f"{EXPLAIN}/ListModels", "UNAUTHENTICATED")
    jobs = jobs_pb2_grpc.VisualizeServiceStub(grpc.insecure_channel(guarded.address))

    def events() -> None:
        list(jobs.Visualize(jobs_pb2.VisualizeRequest(), timeout=10))

    path = "camserve.v1.VisualizeService/Visualize"
    _counts_one_more(guarded, events, "server_stream", path, "UNAUTHENTICATED")


def test_health_counts_and_its_refusals_too(guarded: ServerThread) -> None:
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(guarded.address))
    check = partial(health.Check, health_pb2.HealthCheckRequest(), timeout=10)
    _counts_one_more(guarded, check, "unary", "grpc.health.v1.Health/Check", "OK")
    listing = partial(health.List, health_pb2.HealthListRequest(), timeout=10)
    _counts_one_more(guarded, listing, "unary", "grpc.health.v1.Health/List", "UNIMPLEMENTED")


def test_an_ended_watch_counts_cancelled(guarded: ServerThread) -> None:
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(guarded.address))

    def watch_then_leave() -> None:
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        next(watch)  # raises: the caller has CANCELLED

    path = "grpc.health.v1.Health/Watch"
    _counts_one_more(guarded, watch_then_leave, "server_stream", path, "CANCELLED")


@pytest.mark.parametrize("metadata", [WITH_TOKEN, ()], ids=["token", "no-token"])
def test_a_made_up_path_makes_no_series_of_its_name(
    guarded: ServerThread, metadata: tuple[tuple[str, str], ...]
) -> None:
    made_up = grpc.insecure_channel(guarded.address).unary_unary(f"/{EXPLAIN}/MadeUp9f2")
    with pytest.raises(grpc.RpcError) as caught:
        made_up(b"", metadata=metadata, timeout=10)
    assert caught.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED)
    assert guarded.runtime is not None
    labels = {
        value
        for family in guarded.runtime.metrics.registry.collect()
        for sample in family.samples
        for value in sample.labels.values()
    }
    assert not [value for value in labels if "MadeUp" in value]


def test_a_made_up_path_refused_by_auth_counts_as_unknown(guarded: ServerThread) -> None:
    made_up = grpc.insecure_channel(guarded.address).unary_unary("/made.Up/Nothing")
    call = partial(made_up, b"", timeout=10)
    _counts_one_more(guarded, call, "unary", "unknown/unknown", "UNAUTHENTICATED")
