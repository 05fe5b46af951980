"""Cancellation, deadlines and graceful shutdown with requests in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rpc_helpers import metric_value, request, stub, tensor_input

from server_harness import ServerThread, settings_for, write_r18_config

SLOW = {"steps": 400, "batch_size": 8}  # integrated gradients: long enough to be in flight


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServerThread]:
    thread = ServerThread(settings_for(write_r18_config(tmp_path), heavy_batch_size=1))
    thread.start()
    yield thread
    thread.stop()


def _health(address: str) -> int:
    channel = grpc.insecure_channel(address)
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    return int(reply.status)


def test_health_is_serving_after_warm_up(own_server: ServerThread) -> None:
    assert _health(own_server.address) == health_pb2.HealthCheckResponse.SERVING


def test_a_cancelled_request_is_dropped_and_the_server_stays_up(own_server: ServerThread) -> None:
    client = stub(own_server.address)
    blocker = client.Explain.future(
        request("r18", "integrated_gradients", tensor_input(1), options=SLOW)
    )
    time.sleep(0.3)  # the blocker now occupies the only worker
    queued = client.Explain.future(
        request("r18", "integrated_gradients", tensor_input(2), options=SLOW)
    )
    time.sleep(0.3)
    assert queued.cancel()
    assert blocker.result(timeout=120).heatmaps
    assert own_server.runtime is not None
    registry = own_server.runtime.metrics.registry
    labels = {"model": "r18", "method": "integrated_gradients"}
    assert metric_value(registry, "camserve_batch_size_sum", labels) == 1
    assert client.Explain(request("r18", "gradcam", tensor_input(3))).heatmaps


def test_an_expired_deadline_is_not_computed(own_server: ServerThread) -> None:
    client = stub(own_server.address)
    blocker = client.Explain.future(
        request("r18", "integrated_gradients", tensor_input(1), options=SLOW)
    )
    time.sleep(0.2)
    with pytest.raises(grpc.RpcError) as caught:
        client.Explain(request("r18", "integrated_gradients", tensor_input(2)), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    blocker.result(timeout=120)


def test_graceful_shutdown_finishes_requests_in_flight(tmp_path: Path) -> None:
    server = ServerThread(settings_for(write_r18_config(tmp_path), heavy_batch_size=1))
    server.start()
    client = stub(server.address)
    options = {"steps": 100, "batch_size": 8}
    with ThreadPoolExecutor(max_workers=3) as pool:
        in_flight = [
            pool.submit(
                client.Explain,
                request("r18", "integrated_gradients", tensor_input(i), options=options),
            )
            for i in range(3)
        ]
        time.sleep(0.5)
        stopper = threading.Thread(target=server.stop, kwargs={"grace_s": 60.0})
        stopper.start()
        time.sleep(0.2)
        with pytest.raises(grpc.RpcError) as refused:
            stub(server.address).Explain(request("r18", "gradcam", tensor_input(9)), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        replies = [future.result(timeout=120) for future in in_flight]
        stopper.join(timeout=120)
    assert all(reply.heatmaps for reply in replies)
