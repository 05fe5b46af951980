"""Faithfulness scores are heavy work too: stopped between chunks when nobody waits for
them any more, as occlusion is (``test_heavy_requests.py``)."""

from __future__ import annotations

import time

import grpc
import pytest
from rpc_helpers import random_image, request, stub
from test_heavy_requests import IDLE_WITHIN_S, _wait_idle

from camserve.v1 import explain_pb2 as pb
from server_harness import ServerThread

# Deletion and insertion with 256 steps for the 10 classes of r18 at 64x64: 5,101 forward
# passes, tens of seconds on two cores, cut into chunks of at most 256.
NAMES = ("deletion", "insertion")


def _endless(seed: int) -> pb.ExplainRequest:
    query = request("r18", "gradcam", random_image(seed, (64, 64)), top_k=10)
    query.faithfulness.extend(NAMES)
    query.faithfulness_options.steps = 256
    return query


def test_faithfulness_stops_when_the_deadline_passes(server: ServerThread) -> None:
    _wait_idle(server, 60)
    with pytest.raises(grpc.RpcError) as caught:
        stub(server.address).Explain(_endless(21), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    _wait_idle(server, IDLE_WITHIN_S)
    reply = stub(server.address).Explain(request("r18", "gradcam", random_image(22)), timeout=10)
    assert len(reply.heatmaps) == 1


def test_faithfulness_stops_when_the_caller_cancels(server: ServerThread) -> None:
    _wait_idle(server, 60)
    call = stub(server.address).Explain.future(_endless(23), timeout=120)
    time.sleep(0.5)
    call.cancel()
    _wait_idle(server, IDLE_WITHIN_S)
