"""RPC-level faults found by attacking a running server, each kept closed here.

Malformed messages get INVALID_ARGUMENT and one log line (and end a stream at once);
the error interceptor serves every RPC shape, health ``Watch`` included; request
metrics take only the server's own names and the status the caller got; auth cannot
be switched off by a blank token list, and reflection sits behind it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health_pb2 import HealthCheckRequest as Request
from grpc_health.v1.health_pb2 import HealthCheckResponse as Reply
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from rpc_helpers import metric_value, random_image, request, stub, tensor_input

from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc
from camserve_server.__main__ import main
from camserve_server.config import parse_args
from camserve_server.errors import InvalidArgument, NotFound
from camserve_server.methods import METHODS
from camserve_server.rpc.interceptors import AuthInterceptor, ErrorInterceptor
from camserve_server.runtime.metrics import REQUEST_LATENCY
from server_harness import ServerThread, settings_for

MALFORMED = b"\x0f not a protobuf message"  # field 1 with wire type 7: corrupt for any type
TOKEN = "reliability-token"
COUNT = REQUEST_LATENCY + "_count"
SERVING = health_pb2.HealthCheckResponse.SERVING


def _code_of(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# 4. A malformed message gets INVALID_ARGUMENT, on every RPC shape of the service.

UNARY_PATHS = [
    "/camserve.v1.ExplainService/Explain",
    "/camserve.v1.ExplainService/Embed",
    "/camserve.v1.ExplainService/ListModels",
    "/camserve.v1.ImageSetService/TopActivating",
    "/camserve.v1.VisualizeService/ListJobMethods",
]


@pytest.mark.parametrize("path", UNARY_PATHS)
def test_malformed_unary_request_is_invalid_argument(server: ServerThread, path: str) -> None:
    channel = grpc.insecure_channel(server.address)
    error = _code_of(lambda: channel.unary_unary(path)(MALFORMED, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "malformed" in (error.details() or "")


def test_malformed_visualize_request_is_invalid_argument(server: ServerThread) -> None:
    channel = grpc.insecure_channel(server.address)
    call = channel.unary_stream("/camserve.v1.VisualizeService/Visualize")
    error = _code_of(lambda: list(call(MALFORMED, timeout=10)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


def test_malformed_message_ends_explain_stream_at_once(server: ServerThread) -> None:
    """The caller keeps its side open: the server must end the stream, not wait for more."""
    release = threading.Event()

    def messages() -> Iterator[bytes]:
        yield MALFORMED
        release.wait(30)

    channel = grpc.insecure_channel(server.address)
    call = channel.stream_stream("/camserve.v1.ExplainService/ExplainStream")
    started = time.monotonic()
    try:
        error = _code_of(lambda: list(call(messages(), timeout=10)))
    finally:
        release.set()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert time.monotonic() - started < 5


def test_malformed_message_after_good_ones_ends_explain_stream(server: ServerThread) -> None:
    good = request("demo", "gradcam", tensor_input(41)).SerializeToString()
    channel = grpc.insecure_channel(server.address)
    call = channel.stream_stream("/camserve.v1.ExplainService/ExplainStream")
    error = _code_of(lambda: list(call(iter([good, MALFORMED]), timeout=10)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


def test_malformed_message_ends_index_stream(server: ServerThread) -> None:
    channel = grpc.insecure_channel(server.address)
    call = channel.stream_stream("/camserve.v1.ImageSetService/IndexImages")
    error = _code_of(lambda: list(call(iter([MALFORMED]), timeout=10)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


def test_malformed_requests_log_one_line_each(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    channel = grpc.insecure_channel(server.address)
    explain = channel.unary_unary("/camserve.v1.ExplainService/Explain")
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            _code_of(lambda: explain(MALFORMED, timeout=10))
        time.sleep(0.2)  # the server thread logs after it answers
    lines = [r for r in caplog.records if "ExplainService/Explain" in r.getMessage()]
    assert len(lines) == 3, [r.getMessage() for r in caplog.records]
    assert all("malformed" in r.getMessage() for r in lines)
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a bad request"


# 5. The error interceptor serves all four RPC shapes, in both of grpc.aio's styles.


def _check(request: Request) -> Reply:
    if request.service == "missing":
        raise NotFound("no thing called 'missing'")
    return Reply(status=SERVING)


async def _unary_unary(request: Request, _context: aio.ServicerContext) -> Reply:
    return _check(request)


async def _unary_stream_generator(
    request: Request, _context: aio.ServicerContext
) -> AsyncIterator[Reply]:
    yield Reply(status=SERVING)
    yield _check(request)


async def _unary_stream_writer(request: Request, context: aio.ServicerContext) -> None:
    await context.write(Reply(status=SERVING))  # health Watch's style
    await context.write(_check(request))


async def _stream_unary(requests: AsyncIterator[Request], _context: aio.ServicerContext) -> Reply:
    reply = Reply()
    async for message in requests:
        reply = _check(message)
    return reply


async def _stream_stream_generator(
    requests: AsyncIterator[Request], _context: aio.ServicerContext
) -> AsyncIterator[Reply]:
    async for message in requests:
        yield _check(message)


async def _stream_stream_writer(_requests: object, context: aio.ServicerContext) -> None:
    while (message := await context.read()) is not aio.EOF:
        await context.write(_check(message))


SHAPES: dict[str, tuple[Any, Any]] = {
    "UnaryUnary": (grpc.unary_unary_rpc_method_handler, _unary_unary),
    "UnaryStreamGenerator": (grpc.unary_stream_rpc_method_handler, _unary_stream_generator),
    "UnaryStreamWriter": (grpc.unary_stream_rpc_method_handler, _unary_stream_writer),
    "StreamUnary": (grpc.stream_unary_rpc_method_handler, _stream_unary),
    "StreamStreamGenerator": (grpc.stream_stream_rpc_method_handler, _stream_stream_generator),
    "StreamStreamWriter": (grpc.stream_stream_rpc_method_handler, _stream_stream_writer),
}


@pytest.fixture(scope="module")
def shapes_address() -> Iterator[str]:
    """A grpc.aio server on a real port with only ``ErrorInterceptor`` and one handler of
    each shape: the camserve services have no client-streaming unary RPC to try it on."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[aio.Server, int]:
        handlers = {
            name: factory(behaviour, Request.FromString, Reply.SerializeToString)
            for name, (factory, behaviour) in SHAPES.items()
        }
        server = aio.server(interceptors=[ErrorInterceptor()])
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Shapes", handlers),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    yield f"127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _call_shape(address: str, name: str, messages: list[bytes]) -> list[bytes]:
    channel = grpc.insecure_channel(address)
    path = f"/test.Shapes/{name}"
    if name == "UnaryUnary":
        return [channel.unary_unary(path)(messages[0], timeout=10)]
    if name.startswith("UnaryStream"):
        return list(channel.unary_stream(path)(messages[0], timeout=10))
    if name == "StreamUnary":
        return [channel.stream_unary(path)(iter(messages), timeout=10)]
    return list(channel.stream_stream(path)(iter(messages), timeout=10))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_interceptor_passes_replies_of_every_shape(shapes_address: str, shape: str) -> None:
    replies = _call_shape(shapes_address, shape, [Request(service="ok").SerializeToString()])
    assert replies and all(Reply.FromString(r).status == SERVING for r in replies)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_interceptor_maps_domain_errors_of_every_shape(shapes_address: str, shape: str) -> None:
    missing = Request(service="missing").SerializeToString()
    error = _code_of(lambda: _call_shape(shapes_address, shape, [missing]))
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    assert error.details() == "no thing called 'missing'"


@pytest.mark.parametrize("shape", list(SHAPES))
def test_interceptor_refuses_malformed_messages_of_every_shape(
    shapes_address: str, shape: str
) -> None:
    error = _code_of(lambda: _call_shape(shapes_address, shape, [MALFORMED]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "grpc.health.v1.HealthCheckRequest" in (error.details() or "")


def test_health_watch_answers_on_an_idle_server(server: ServerThread) -> None:
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.address))
    for service in ("", "camserve.v1.ExplainService"):
        watch = health.Watch(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert next(watch).status == SERVING
        watch.cancel()


def test_reflection_lists_the_services(server: ServerThread) -> None:
    assert "camserve.v1.ExplainService" in _reflected_services(server.address)


# 6. Request metrics: the server's own names only, and the status the caller got.


def _label_values(server: ServerThread, label: str) -> set[str]:
    assert server.runtime is not None
    values: set[str] = set()
    for family in server.runtime.metrics.registry.collect():
        if family.name == REQUEST_LATENCY:
            values.update(sample.labels[label] for sample in family.samples)
    return values


def _latency_count(server: ServerThread, model: str, method: str, code: str) -> float:
    assert server.runtime is not None
    labels = {"model": model, "method": method, "code": code}
    return metric_value(server.runtime.metrics.registry, COUNT, labels)


def _wait_for(condition: Callable[[], bool], timeout: float = 10) -> bool:
    stop = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > stop:
            return False
        time.sleep(0.02)
    return True


def test_made_up_names_make_no_new_metric_series(server: ServerThread) -> None:
    client = stub(server.address)
    before = _latency_count(server, "unknown", "gradcam", "NOT_FOUND")
    for i in range(40):
        _code_of(partial(client.Explain, request(f"made-up-{i}", "gradcam", tensor_input(1))))
        _code_of(partial(client.Explain, request("r18", f"made-up-{i}", tensor_input(1))))
    assert _label_values(server, "model") <= {"demo", "r18", "mnv3", "unknown"}
    assert _label_values(server, "method") <= {*METHODS, "unknown"}
    assert _latency_count(server, "unknown", "gradcam", "NOT_FOUND") == before + 40
    assert _latency_count(server, "r18", "unknown", "INVALID_ARGUMENT") >= 40


def test_a_passed_deadline_is_recorded_as_deadline_exceeded(server: ServerThread) -> None:
    slow = request("r18", "occlusion", tensor_input(42), options={"window": 2, "stride": 1})
    before = {
        code: _latency_count(server, "r18", "occlusion", code)
        for code in ("OK", "DEADLINE_EXCEEDED")
    }
    error = _code_of(lambda: stub(server.address).Explain(slow, timeout=0.3))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    recorded = _wait_for(
        lambda: (
            _latency_count(server, "r18", "occlusion", "DEADLINE_EXCEEDED")
            > before["DEADLINE_EXCEEDED"]
        )
    )
    assert recorded, "the failed request was not recorded as DEADLINE_EXCEEDED"
    assert _latency_count(server, "r18", "occlusion", "OK") == before["OK"]


@pytest.fixture(scope="module")
def small_replies() -> Iterator[ServerThread]:
    """The demo model behind a 64 KiB message cap."""
    thread = ServerThread(settings_for(None, max_message_bytes=64 << 10))
    thread.start()
    yield thread
    thread.stop()


def test_a_reply_too_large_is_invalid_argument_and_recorded_so(small_replies: ServerThread) -> None:
    # 16 feature maps of 64 x 64 float32: 256 KiB, found too large only once computed
    maps = pb.ActivationsRequest(
        model="demo", input=pb.ImageInput(encoded=random_image(43)), layer="features.block1.0"
    )
    before = {
        code: _latency_count(small_replies, "demo", "feature_maps", code)
        for code in ("OK", "INVALID_ARGUMENT")
    }
    error = _code_of(lambda: stub(small_replies.address).Activations(maps, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "max-message-bytes" in (error.details() or "")
    refused = _latency_count(small_replies, "demo", "feature_maps", "INVALID_ARGUMENT")
    assert refused == before["INVALID_ARGUMENT"] + 1
    assert _latency_count(small_replies, "demo", "feature_maps", "OK") == before["OK"]


# 7. Auth: a blank token list is a start-up error; reflection needs a token.


def test_blank_auth_tokens_refuse_to_start(capsys: pytest.CaptureFixture[str]) -> None:
    # float16 on a CPU is refused later, at build time: it keeps a server that ignored the
    # blank tokens from starting (and serving until SIGTERM) inside the test
    argv = ["--auth-tokens", " , ", "--port", "0", "--metrics-port", "-1"]
    assert main([*argv, "--devices", "cpu", "--precision", "float16"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "auth_tokens" in lines[0], lines


@pytest.mark.parametrize("value", [" , ", "", ","])
def test_blank_auth_tokens_from_the_environment_are_refused(value: str) -> None:
    with pytest.raises(InvalidArgument, match="auth_tokens"):
        parse_args([], env={"CAMSERVE_AUTH_TOKENS": value})


def test_blank_tokens_given_in_code_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="blank"):
        AuthInterceptor(("good", " "))


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("true", True), ("0", False)])
def test_reflection_setting_parses_as_a_flag(value: str, expected: bool) -> None:
    settings = parse_args(["--reflection-without-auth", value], env={})
    assert settings.reflection_without_auth is expected


def test_reflection_setting_refuses_other_words() -> None:
    with pytest.raises(InvalidArgument, match="reflection_without_auth"):
        parse_args(["--reflection-without-auth", "maybe"], env={})


def _reflected_services(address: str, metadata: tuple[tuple[str, str], ...] = ()) -> set[str]:
    reflection = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(address))
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = list(reflection.ServerReflectionInfo(iter([ask]), metadata=metadata, timeout=10))
    return {service.name for service in replies[0].list_services_response.service}


def _guarded(**overrides: Any) -> Iterator[ServerThread]:
    thread = ServerThread(settings_for(None, auth_tokens=(TOKEN,), **overrides))
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def guarded() -> Iterator[ServerThread]:
    """The demo model behind a bearer token."""
    yield from _guarded()


@pytest.fixture(scope="module")
def reflection_opened() -> Iterator[ServerThread]:
    """The demo model behind a bearer token, reflection opened explicitly."""
    yield from _guarded(reflection_without_auth=True)


def test_reflection_needs_a_token_when_auth_is_on(guarded: ServerThread) -> None:
    error = _code_of(lambda: _reflected_services(guarded.address))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    with_token = _reflected_services(guarded.address, (("authorization", f"Bearer {TOKEN}"),))
    assert "camserve.v1.ExplainService" in with_token


def test_health_stays_open_when_auth_is_on(guarded: ServerThread) -> None:
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(guarded.address))
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
    assert next(watch).status == SERVING
    watch.cancel()


def test_reflection_can_be_opened_explicitly(reflection_opened: ServerThread) -> None:
    assert "camserve.v1.ExplainService" in _reflected_services(reflection_opened.address)
    client = explain_pb2_grpc.ExplainServiceStub(grpc.insecure_channel(reflection_opened.address))
    error = _code_of(lambda: client.ListModels(pb.ListModelsRequest(), timeout=10))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
