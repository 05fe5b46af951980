"""Small requests that ask for a lot: refused before any work when their answer cannot fit,
stopped between chunks when nobody waits for them any more, and ordinary phone photos
answered at a size that fits."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from rpc_helpers import heatmap, random_image, request, stub

from camserve import tensors
from camserve.v1 import explain_pb2 as pb
from server_harness import ServerThread, settings_for

# Occlusion with a 1-pixel window at stride 1 on a 64x64 input: 4,096 forward passes,
# seconds of work on two cores, cut into chunks of 32.
ENDLESS = {"window": 1, "stride": 1, "batch_size": 32}
IDLE_WITHIN_S = 4.0


def _batches(server: ServerThread) -> float:
    assert server.runtime is not None
    registry = server.runtime.metrics.registry
    total = 0.0
    for metric in registry.collect():
        if metric.name == "camserve_batch_size":
            total += sum(s.value for s in metric.samples if s.name.endswith("_count"))
    return total


def _wait_idle(server: ServerThread, within_s: float) -> float:
    """Seconds until every device worker is idle; fails after ``within_s``."""
    assert server.runtime is not None
    started = time.monotonic()
    while any(worker.pending for worker in server.runtime.workers):
        elapsed = time.monotonic() - started
        assert elapsed < within_s, f"a worker is still busy after {elapsed:.1f} s"
        time.sleep(0.05)
    return time.monotonic() - started


def _jpeg(height: int, width: int) -> bytes:
    rng = np.random.default_rng(7)
    coarse = rng.integers(0, 256, (height // 64, width // 64, 3), dtype=np.uint8)
    picture = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _refused_before_any_work(server: ServerThread, query: pb.ExplainRequest) -> None:
    """``query`` is INVALID_ARGUMENT naming the message limit, and no batch ran for it."""
    before = _batches(server)
    with pytest.raises(grpc.RpcError) as caught:
        stub(server.address).Explain(query, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message limit" in str(caught.value.details())
    assert _batches(server) == before, "nothing was computed"


def test_a_reply_that_cannot_fit_is_refused_before_any_work(server: ServerThread) -> None:
    huge = request("r18", "gradcam", random_image(11), top_k=6, height=8192, width=8192)
    _refused_before_any_work(server, huge)


def test_a_tensor_whose_maps_cannot_fit_is_refused_before_any_work(server: ServerThread) -> None:
    # A tensor's maps have the tensor's size: four 1600x1600 float32 maps are 41 MB.
    array = np.random.default_rng(3).standard_normal((3, 1600, 1600)).astype(np.float32)
    big = request("r18", "gradcam", pb.ImageInput(tensor=tensors.to_proto(array)), top_k=4)
    _refused_before_any_work(server, big)


def test_repeated_targets_count_once(server: ServerThread) -> None:
    repeated = request("r18", "gradcam", random_image(12), classes=(3,) * 12, height=2048,
                       width=2048)  # fmt: skip
    reply = stub(server.address).Explain(repeated, timeout=60)
    assert [h.target for h in reply.heatmaps] == [3]


def test_a_phone_photo_is_answered_at_a_size_that_fits(server: ServerThread) -> None:
    photo = _jpeg(3024, 4032)
    reply = stub(server.address).Explain(request("r18", "gradcam", photo), timeout=120)
    assert (reply.image_height, reply.image_width) == (3024, 4032)
    assert heatmap(reply.heatmaps[0]).shape == (768, 1024)
    full = request("r18", "gradcam", photo, height=3024, width=4032)  # float32: 48 MB
    with pytest.raises(grpc.RpcError) as caught:
        stub(server.address).Explain(full, timeout=120)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    full.output.dtype = pb.DTYPE_UINT8  # 12 MB: fits
    reply = stub(server.address).Explain(full, timeout=120)
    assert heatmap(reply.heatmaps[0]).shape == (3024, 4032)


def test_heavy_work_stops_when_the_deadline_passes(server: ServerThread) -> None:
    _wait_idle(server, 60)
    endless = request("r18", "occlusion", random_image(13, (64, 64)), options=ENDLESS)
    with pytest.raises(grpc.RpcError) as caught:
        stub(server.address).Explain(endless, timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    _wait_idle(server, IDLE_WITHIN_S)
    reply = stub(server.address).Explain(request("r18", "gradcam", random_image(14)), timeout=10)
    assert len(reply.heatmaps) == 1


def test_heavy_work_stops_when_the_caller_cancels(server: ServerThread) -> None:
    _wait_idle(server, 60)
    endless = request("r18", "occlusion", random_image(15, (64, 64)), options=ENDLESS)
    call = stub(server.address).Explain.future(endless, timeout=120)
    time.sleep(0.5)
    call.cancel()
    _wait_idle(server, IDLE_WITHIN_S)


def test_shutdown_stops_heavy_work_that_outlives_the_grace_period(test_config: Path) -> None:
    thread = ServerThread(settings_for(test_config))
    thread.start()
    errors: list[grpc.StatusCode] = []

    def call() -> None:
        endless = request("r18", "occlusion", random_image(16, (64, 64)), options=ENDLESS)
        try:
            stub(thread.address).Explain(endless, timeout=120)
        except grpc.RpcError as exc:
            errors.append(exc.code())

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(1.0)
    started = time.monotonic()
    thread.stop(grace_s=0.5)
    assert time.monotonic() - started < IDLE_WITHIN_S + 1
    caller.join(timeout=10)
    assert errors, "the caller was answered with an error, not left waiting"
