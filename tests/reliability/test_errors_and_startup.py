"""What callers and operators are told when things go wrong (hardening issue, items 9 and 10).

9. An image-set error says what the caller needs, a status and a short message, and
   nothing of the server's insides: no Redis host or port, no raw Redis error, no Lua
   script hash, no other set's name. The details go to the server's log, on one line.
10. A server that cannot start says why on one line of stderr and exits 2, without a
    traceback and without ever claiming to serve: a port in use (gRPC or metrics),
    weights that are not a state dict, an unknown architecture, also under
    ``--processes``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis
import torch
from rpc_helpers import random_image

from camserve.v1 import imagesets_pb2 as pb
from camserve.v1 import imagesets_pb2_grpc
from redis_server import free_port
from server_harness import TORCHVISION_TOML, ServerThread, settings_for, write_demo_only_config

STORE_LOGGER = "camserve_server.imagesets.store_redis"
PREFIX = "camserve:sets:v1"  # the server's default key prefix for image sets
START_TIMEOUT_S = 240


def _set_stub(address: str) -> imagesets_pb2_grpc.ImageSetServiceStub:
    return imagesets_pb2_grpc.ImageSetServiceStub(grpc.insecure_channel(address))


def _rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _create_set(stub: imagesets_pb2_grpc.ImageSetServiceStub, name: str) -> None:
    """A new empty set: the first message of an indexing stream creates it."""
    replies = list(stub.IndexImages(iter([pb.IndexImagesRequest(set=name, model="demo")])))
    assert replies[-1].done and replies[-1].set.name == name


def _assert_says_nothing_of_the_store(details: str, redis_address: str) -> None:
    assert redis_address not in details
    assert not re.search(r"\b[0-9a-f]{40}\b", details), details  # a script's sha1
    for internal in ("WRONGTYPE", "script", "Error", "Errno", "redis.", "@user_script"):
        assert internal not in details, details
    assert "\n" not in details and len(details) < 200, details


# 9. Error text says too much.


def test_a_missing_set_is_not_found_without_naming_the_other_sets(server: ServerThread) -> None:
    stub = _set_stub(server.address)
    private = f"tenant-a-{uuid.uuid4().hex[:8]}"
    _create_set(stub, private)
    missing = "no-such-set"
    try:
        calls: list[Callable[[], object]] = [
            lambda: stub.DescribeSet(pb.DescribeSetRequest(set=missing)),
            lambda: stub.DeleteSet(pb.DeleteSetRequest(set=missing)),
            lambda: stub.NearestNeighbours(pb.NearestNeighboursRequest(set=missing, id="x")),
            lambda: stub.EmbeddingMap(pb.EmbeddingMapRequest(set=missing)),
        ]
        for call in calls:
            error = _rpc_error(call)
            assert error.code() == grpc.StatusCode.NOT_FOUND
            details = error.details() or ""
            assert missing in details and private not in details, details
    finally:
        stub.DeleteSet(pb.DeleteSetRequest(set=private))


@pytest.fixture(scope="module")
def redis_server_thread(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """A demo-only server whose image sets live in the shared test Redis."""
    config = write_demo_only_config(tmp_path_factory.mktemp("redis-sets"))
    with ServerThread(settings_for(config, redis_url=redis_url)) as thread:
        yield thread


def test_a_redis_refusal_reaches_the_caller_without_redis_details(
    redis_server_thread: ServerThread, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    stub = _set_stub(redis_server_thread.address)
    name = f"refused-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(redis_url)
    _create_set(stub, name)
    address = "{host}:{port}".format(**admin.connection_pool.connection_kwargs)
    try:
        # A member key of the wrong type: the add script fails on it before writing
        # anything, and Redis's error names the script by its sha1.
        admin.set(f"{PREFIX}:{{{name}}}:m:one", "not a hash")
        missing = _rpc_error(lambda: stub.DescribeSet(pb.DescribeSetRequest(set="nope")))
        assert missing.code() == grpc.StatusCode.NOT_FOUND
        assert name not in (missing.details() or "")
        caplog.set_level(logging.WARNING, logger=STORE_LOGGER)
        message = pb.IndexImagesRequest(
            set=name, images=[pb.SetImage(id="one", encoded=random_image(1, (64, 64)))]
        )
        error = _rpc_error(lambda: list(stub.IndexImages(iter([message]), timeout=60)))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        details = error.details() or ""
        _assert_says_nothing_of_the_store(details, address)
        assert "image-set store" in details
        logged = [r.getMessage() for r in caplog.records if r.name == STORE_LOGGER]
        assert len(logged) == 1, logged
        assert "WRONGTYPE" in logged[0] and address in logged[0] and "\n" not in logged[0]
    finally:
        stub.DeleteSet(pb.DeleteSetRequest(set=name))
        admin.delete(f"{PREFIX}:{{{name}}}:m:one")
        admin.close()


def test_an_unreachable_redis_is_unavailable_without_its_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://127.0.0.1:{port}/0"
    with ServerThread(settings_for(write_demo_only_config(tmp_path), redis_url=url)) as thread:
        stub = _set_stub(thread.address)
        caplog.set_level(logging.WARNING, logger=STORE_LOGGER)
        for call in (
            lambda: stub.ListSets(pb.ListSetsRequest()),
            lambda: stub.DescribeSet(pb.DescribeSetRequest(set="any")),
        ):
            error = _rpc_error(call)
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            details = error.details() or ""
            _assert_says_nothing_of_the_store(details, f"127.0.0.1:{port}")
            assert str(port) not in details and "Connection" not in details, details
            assert "retry" in details
        logged = [r.getMessage() for r in caplog.records if r.name == STORE_LOGGER]
        assert len(logged) == 2 and all(f"127.0.0.1:{port}" in line for line in logged), logged


# 10. Start-up failures are tracebacks.


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m camserve_server`` with ``args``, run until it exits."""
    return subprocess.run(
        [sys.executable, "-m", "camserve_server", "--log-level", "WARNING", *args],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _assert_refused_in_one_line(run: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, exactly one line on stderr naming the problem, never a claim to serve."""
    output = run.stdout + run.stderr
    assert run.returncode == 2, output
    assert "Traceback" not in output, output
    assert "serving on" not in output and "listening" not in output, output
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("camserve-server: "), lines
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process could hold: bound and listening on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_a_grpc_port_in_use_is_one_line_and_exit_2(taken_port: int) -> None:
    run = _start("--port", str(taken_port), "--metrics-port", "-1")
    _assert_refused_in_one_line(run, f"127.0.0.1:{taken_port}", "--port", "in use")


def test_a_metrics_port_in_use_is_one_line_and_exit_2(taken_port: int) -> None:
    run = _start("--port", "0", "--metrics-port", str(taken_port))
    _assert_refused_in_one_line(run, f"127.0.0.1:{taken_port}", "--metrics-port", "in use")


def test_an_unknown_architecture_is_one_line_naming_the_model(tmp_path: Path) -> None:
    config = tmp_path / "models.toml"
    config.write_text(TORCHVISION_TOML.format(name="mystery", arch="resnet1800"))
    run = _start("--config", str(config), "--port", "0", "--metrics-port", "-1")
    _assert_refused_in_one_line(run, "'mystery'", "'resnet1800'")


def _bad_weights(folder: Path, kind: str) -> Path:
    path = folder / f"{kind}.pt"
    if kind == "random-bytes":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "pickled-module":  # the classic mistake: torch.save(model), not its state dict
        torch.save(torch.nn.Linear(2, 2), path)
    elif kind == "other-architecture":
        torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    else:
        raise AssertionError(kind)
    return path


def _config_with_weights(folder: Path, weights: Path) -> Path:
    config = folder / "models.toml"
    text = TORCHVISION_TOML.format(name="broken", arch="resnet18")
    config.write_text(text + f'weights = "{weights.as_posix()}"\n')
    return config


@pytest.mark.parametrize("kind", ["random-bytes", "pickled-module", "other-architecture"])
def test_weights_that_are_not_a_state_dict_are_one_line_and_exit_2(
    tmp_path: Path, kind: str
) -> None:
    weights = _bad_weights(tmp_path, kind)
    config = _config_with_weights(tmp_path, weights)
    run = _start("--config", str(config), "--port", "0", "--metrics-port", "-1")
    line = _assert_refused_in_one_line(run, "'broken'", weights.name)
    assert "weights_only=False" not in run.stderr and "arbitrary code" not in run.stderr, line


def test_any_random_bytes_as_weights_are_refused_in_words(tmp_path: Path) -> None:
    """torch's unpickler fails on random bytes in many ways (one in sixteen an IndexError):
    every one of them is the same ``InvalidArgument``."""
    from camserve_server.config import ModelSpec
    from camserve_server.errors import InvalidArgument
    from camserve_server.models.loading import load_model

    path = tmp_path / "noise.pt"
    spec = ModelSpec(name="noise", arch="torch.nn:Identity", weights=str(path), input_size=(8, 8))
    for seed in range(300):
        path.write_bytes(random.Random(seed).randbytes(4096))
        with pytest.raises(InvalidArgument, match=r"^model 'noise': weights .* not a state dict"):
            load_model(spec, [torch.device("cpu")], 1 << 20)


@pytest.mark.slow
@pytest.mark.redis
def test_a_supervised_start_up_failure_is_one_line_and_exit_2(
    tmp_path: Path, redis_url: str
) -> None:
    weights = _bad_weights(tmp_path, "random-bytes")
    config = _config_with_weights(tmp_path, weights)
    run = _start(
        "--config", str(config), "--processes", "2", "--redis-url", redis_url,
        "--port", "0", "--metrics-port", "-1",
    )  # fmt: skip
    _assert_refused_in_one_line(run, "'broken'", weights.name)
