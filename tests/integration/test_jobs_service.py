"""``VisualizeService`` over a real port: streamed progress and result, cancellation,
deadlines, the concurrency limit, caching, bad input, and explanations flowing while
jobs run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from rpc_helpers import metric_value, request, stub, wait_for

from camserve import tensors
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import jobs_pb2 as jpb
from camserve.v1 import jobs_pb2_grpc
from camserve_server.demo import SAMPLES_DIR
from server_harness import ServerThread, settings_for

CIRCLE = (SAMPLES_DIR / "00_circle.png").read_bytes()
LONG = 2000  # steps of a job that is cancelled long before it ends


def jobs_stub(address: str) -> jobs_pb2_grpc.VisualizeServiceStub:
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    return jobs_pb2_grpc.VisualizeServiceStub(channel)


def job(method: str, *, image: bytes | None = None, **fields: Any) -> jpb.VisualizeRequest:
    options = {
        name: pb.OptionValue(text=v) if isinstance(v, str) else pb.OptionValue(number=float(v))
        for name, v in fields.pop("options", {}).items()
    }
    message = jpb.VisualizeRequest(model="demo", method=method, options=options, **fields)
    if image is not None:
        message.input.CopyFrom(pb.ImageInput(encoded=image))
    return message


def class_job(target: int, steps: int, **fields: Any) -> jpb.VisualizeRequest:
    return job("activation_maximization", target=target, options={"steps": steps}, **fields)


def running(server: ServerThread) -> float:
    assert server.runtime is not None
    return metric_value(server.runtime.metrics.registry, "camserve_jobs_running")


def steps_done(server: ServerThread) -> float:
    assert server.runtime is not None
    labels = {"model": "demo", "method": "activation_maximization"}
    return metric_value(server.runtime.metrics.registry, "camserve_job_step_seconds_count", labels)


@pytest.fixture(scope="module")
def jobs(server: ServerThread) -> jobs_pb2_grpc.VisualizeServiceStub:
    return jobs_stub(server.address)


@pytest.fixture(scope="module")
def one_job_server() -> Iterator[ServerThread]:
    """The demo model alone, one job at a time."""
    thread = ServerThread(settings_for(None, max_jobs=1))
    thread.start()
    yield thread
    thread.stop()


def test_list_job_methods_gives_options_ranges_and_the_budget(
    jobs: jobs_pb2_grpc.VisualizeServiceStub,
) -> None:
    reply = jobs.ListJobMethods(jpb.ListJobMethodsRequest(), timeout=10)
    methods = {m.id: m for m in reply.methods}
    assert {"activation_maximization", "deepdream", "feature_inversion", "adversarial"} <= set(
        methods
    )
    assert reply.max_steps == 2000
    assert reply.max_jobs == 4
    adversarial = methods["adversarial"]
    assert adversarial.needs_image
    options = {o.name: o for o in adversarial.options}
    assert options["epsilon"].default.number == pytest.approx(8 / 255)
    assert options["epsilon"].HasField("maximum")
    assert options["epsilon"].maximum == 1.0
    assert set(options["attack"].choices) == {"fgsm", "pgd"}
    assert all(any(o.name == "steps" for o in m.options) for m in reply.methods)


def test_a_job_streams_progress_with_previews_then_its_result(
    jobs: jobs_pb2_grpc.VisualizeServiceStub,
) -> None:
    events = list(jobs.Visualize(class_job(2, 12, preview_every=4, seed=11), timeout=60))
    progress = [e.progress for e in events[:-1]]
    assert all(e.WhichOneof("event") == "progress" for e in events[:-1])
    assert [p.step for p in progress] == list(range(1, 13))
    assert {p.total for p in progress} == {12}
    assert [p.step for p in progress if p.HasField("preview")] == [4, 8, 12]
    preview = tensors.from_proto(progress[3].preview.rgb)
    assert preview.dtype == np.uint8
    assert preview.shape == (64, 64, 3)
    assert not progress[3].preview.HasField("tensor")

    assert events[-1].WhichOneof("event") == "result"
    result = events[-1].result
    assert (result.model, result.method, result.cached, result.seed) == (
        "demo",
        "activation_maximization",
        False,
        11,
    )
    picture = tensors.from_proto(result.image.tensor)
    assert picture.dtype == np.float32
    assert picture.shape == (3, 64, 64)
    rgb = tensors.from_proto(result.image.rgb)
    assert rgb.shape == (64, 64, 3)
    assert rgb.dtype == np.uint8
    assert len(result.trace) == result.steps == 12
    assert list(result.trace) == pytest.approx([p.loss for p in progress])
    assert len(result.top_classes) == 5
    probabilities = [c.probability for c in result.top_classes]
    assert probabilities == sorted(probabilities, reverse=True)
    assert result.top_classes[0].label


def test_the_result_tensor_is_what_the_model_classifies(
    jobs: jobs_pb2_grpc.VisualizeServiceStub, server: ServerThread
) -> None:
    result = list(jobs.Visualize(class_job(4, 16, seed=3), timeout=60))[-1].result
    answer = stub(server.address).Explain(
        request("demo", "gradcam", pb.ImageInput(tensor=result.image.tensor)), timeout=30
    )
    assert answer.top_classes[0].index == result.top_classes[0].index
    assert answer.top_classes[0].probability == pytest.approx(
        result.top_classes[0].probability, abs=1e-4
    )


def test_the_same_request_is_answered_from_the_cache(
    jobs: jobs_pb2_grpc.VisualizeServiceStub,
) -> None:
    first = list(jobs.Visualize(class_job(1, 8, seed=5, preview_every=2), timeout=60))
    again = list(jobs.Visualize(class_job(1, 8, seed=5, preview_every=2), timeout=60))
    other_seed = list(jobs.Visualize(class_job(1, 8, seed=6), timeout=60))
    assert len(again) == 1
    assert again[0].result.cached
    assert not first[-1].result.cached
    assert again[0].result.image.tensor.data == first[-1].result.image.tensor.data
    assert list(again[0].result.trace) == list(first[-1].result.trace)
    assert not other_seed[-1].result.cached
    assert other_seed[-1].result.image.tensor.data != first[-1].result.image.tensor.data


def test_a_job_from_an_image_returns_its_extra_images_and_predictions_before(
    jobs: jobs_pb2_grpc.VisualizeServiceStub,
) -> None:
    events = list(
        jobs.Visualize(job("adversarial", image=CIRCLE, target=3, options={"steps": 4}), timeout=60)
    )
    result = events[-1].result
    assert {i.name for i in result.images} >= {"original", "perturbation"}
    for image in result.images:
        assert tensors.from_proto(image.tensor).shape == (3, 64, 64)
        assert tensors.from_proto(image.rgb).shape == (64, 64, 3)
    [before] = [p for p in result.predictions if p.name == "original"]
    assert before.scores[0].index == 0  # the circle, as the model sees it before the attack


BAD_INPUT = {
    "unknown method": (job("no_such_method"), "valid methods: activation_maximization"),
    "unknown layer": (
        job("activation_maximization", layer="no.such", channel=0),
        "valid layers: features",
    ),
    "channel out of range": (
        job("activation_maximization", layer="features", channel=64),
        "(0..63)",
    ),
    "epsilon zero": (job("adversarial", image=CIRCLE, options={"epsilon": 0}), "(0, 1]"),
    "epsilon above one": (job("adversarial", image=CIRCLE, options={"epsilon": 1.5}), "1]"),
    "too many steps": (class_job(0, 2001), "[1, 2000]"),
    "image missing": (job("deepdream"), "needs an input image"),
    "target out of range": (class_job(6, 4), "(0..5)"),
    "unknown option": (job("deepdream", image=CIRCLE, options={"nope": 1}), "valid options"),
    "preview_every negative": (class_job(0, 4, preview_every=-1), "[0, 10000]"),
    "top_k beyond the classes": (class_job(0, 4, top_k=7), "[0, 6]"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_invalid_argument_naming_the_valid_range(
    jobs: jobs_pb2_grpc.VisualizeServiceStub, case: str
) -> None:
    message, expected = BAD_INPUT[case]
    with pytest.raises(grpc.RpcError) as failure:
        list(jobs.Visualize(message, timeout=30))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (failure.value.details() or "")


def test_an_unknown_model_is_not_found(jobs: jobs_pb2_grpc.VisualizeServiceStub) -> None:
    message = class_job(0, 4)
    message.model = "nope"
    with pytest.raises(grpc.RpcError) as failure:
        list(jobs.Visualize(message, timeout=30))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert "served models: demo" in (failure.value.details() or "")


def test_cancelling_stops_the_job_within_a_step_and_frees_its_slot(
    one_job_server: ServerThread,
) -> None:
    jobs = jobs_stub(one_job_server.address)
    call = jobs.Visualize(class_job(0, LONG, seed=21), timeout=120)
    for _ in range(3):
        assert next(call).progress.step > 0
    assert running(one_job_server) == 1
    # While it runs, a second job is refused at once: the server's limit is one.
    with pytest.raises(grpc.RpcError) as refused:
        list(jobs.Visualize(class_job(1, 4, seed=22), timeout=30))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-jobs 1" in (refused.value.details() or "")

    call.cancel()
    assert wait_for(lambda: running(one_job_server) == 0)
    stopped_at = steps_done(one_job_server)
    time.sleep(0.3)
    assert steps_done(one_job_server) == stopped_at  # no step after the slot was freed
    assert stopped_at < LONG
    events = list(jobs.Visualize(class_job(1, 4, seed=23), timeout=60))
    assert events[-1].result.steps == 4


def test_the_deadline_stops_the_job(one_job_server: ServerThread) -> None:
    assert one_job_server.runtime is not None
    registry = one_job_server.runtime.metrics.registry
    labels = {"model": "demo", "method": "activation_maximization", "outcome": "cancelled"}
    cancelled = metric_value(registry, "camserve_jobs_total", labels)
    jobs = jobs_stub(one_job_server.address)
    with pytest.raises(grpc.RpcError) as failure:
        list(jobs.Visualize(class_job(0, LONG, seed=31), timeout=0.5))
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(lambda: running(one_job_server) == 0)
    assert wait_for(lambda: metric_value(registry, "camserve_jobs_total", labels) == cancelled + 1)


def test_explanations_keep_flowing_while_two_jobs_run(
    server: ServerThread, jobs: jobs_pb2_grpc.VisualizeServiceStub
) -> None:
    calls = [jobs.Visualize(class_job(t, LONG, seed=40 + t), timeout=120) for t in (0, 1)]
    steps = [0, 0]

    def drain(k: int) -> None:
        try:
            for event in calls[k]:
                steps[k] = event.progress.step
        except grpc.RpcError:
            pass

    threads = [threading.Thread(target=drain, args=(k,), daemon=True) for k in (0, 1)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: min(steps) > 0 and running(server) == 2)
        explain = stub(server.address)
        for sample in sorted(SAMPLES_DIR.glob("*.png")):
            answer = explain.Explain(request("demo", "gradcam", sample.read_bytes()), timeout=30)
            assert answer.heatmaps
        assert running(server) == 2  # both jobs still running after every explanation
        assert max(steps) < LONG
    finally:
        for call in calls:
            call.cancel()
        for thread in threads:
            thread.join(timeout=10)
    assert wait_for(lambda: running(server) == 0)
