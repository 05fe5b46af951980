"""``EvaluateService`` over a real port: an evaluation of methods on the demo model with
real images and their boxes, streamed progress, determinism, image sets, cancellation,
the shared job limit, and bad input refused before any work."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from rpc_helpers import metric_value, png_bytes, wait_for

from camserve.v1 import evaluate_pb2 as epb
from camserve.v1 import evaluate_pb2_grpc, imagesets_pb2_grpc, jobs_pb2_grpc
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import imagesets_pb2 as spb
from camserve.v1 import jobs_pb2 as jpb
from camserve_server.demo.data import make_dataset
from server_harness import ServerThread, settings_for

SAMPLES = make_dataset(12, seed=21)
IMAGES = [pb.ImageInput(encoded=png_bytes(s.image)) for s in SAMPLES]
# the data set's boxes have inclusive ends; the wire's are exclusive
BOXES = [
    epb.ImageBoxes(boxes=[epb.Box(x0=s.box[0], y0=s.box[1], x1=s.box[2] + 1, y1=s.box[3] + 1)])
    for s in SAMPLES
]
METHODS = ("gradcam", "saliency", "guided_backprop")


def evaluate_stub(address: str) -> evaluate_pb2_grpc.EvaluateServiceStub:
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    return evaluate_pb2_grpc.EvaluateServiceStub(channel)


def evaluation(**fields: Any) -> epb.EvaluateRequest:
    fields.setdefault("model", "demo")
    fields.setdefault("methods", METHODS)
    if "set" not in fields:
        fields.setdefault("images", IMAGES)
    return epb.EvaluateRequest(**fields)


def events(address: str, request: epb.EvaluateRequest) -> list[epb.EvaluateEvent]:
    return list(evaluate_stub(address).Evaluate(request, timeout=300))


@pytest.fixture(scope="module")
def full(server: ServerThread) -> list[epb.EvaluateEvent]:
    """Three methods and random maps on twelve images with boxes, sanity-checked."""
    request = evaluation(boxes=BOXES, sanity_check=True, include_random=True, seed=4)
    return events(server.address, request)


def by_method(report: epb.EvaluateReport) -> dict[str, epb.MethodEvaluation]:
    return {m.method: m for m in report.methods}


def test_progress_counts_every_map_then_the_report_ends_the_stream(
    full: list[epb.EvaluateEvent],
) -> None:
    *progress, last = full
    assert all(e.WhichOneof("event") == "progress" for e in progress)
    assert last.WhichOneof("event") == "report"
    done = [e.progress.done for e in progress]
    assert done == sorted(done) and len(set(done)) == len(done)
    total = 12 * len(METHODS) * (1 + 5)
    assert {e.progress.total for e in progress} == {total} and done[-1] == total
    assert {e.progress.stage for e in progress} == {"explain", "sanity"}
    assert {e.progress.method for e in progress} == set(METHODS)


def test_the_report_scores_every_method_on_every_image(full: list[epb.EvaluateEvent]) -> None:
    report = full[-1].report
    assert (report.model, report.layer) == ("demo", "features")
    assert [m.method for m in report.methods] == [*METHODS, "random"]
    assert list(report.targets) == [s.label for s in SAMPLES]  # the demo model is right
    names = [m.name for m in report.metrics]
    assert names == [
        "deletion",
        "insertion",
        "drop_in_confidence",
        "increase_in_confidence",
        "road_morf",
        "road_lerf",
        "pointing_game",
    ]
    directions = {m.name: m.higher_is_better for m in report.metrics}
    assert not directions["deletion"] and directions["insertion"]
    for method in report.methods:
        assert set(method.scores) == set(names)
        for summary in method.scores.values():
            values = np.array(summary.values)
            assert values.shape == (12,) and np.isfinite(values).all()
            assert summary.mean == pytest.approx(values.mean())
            assert summary.std == pytest.approx(values.std())
    assert report.faithfulness_options.steps == 20
    assert report.pointing_tolerance == 15
    assert report.sanity_threshold == 0.5


def test_gradcam_beats_random_maps_and_passes_the_sanity_check(
    full: list[epb.EvaluateEvent],
) -> None:
    methods = by_method(full[-1].report)
    gradcam, random = methods["gradcam"], methods["random"]
    assert gradcam.scores["deletion"].mean < random.scores["deletion"].mean
    assert gradcam.scores["insertion"].mean > random.scores["insertion"].mean
    assert gradcam.scores["pointing_game"].mean > random.scores["pointing_game"].mean
    assert gradcam.scores["pointing_game"].mean >= 0.75
    assert gradcam.sanity.correlation < 0.5 and gradcam.sanity.passed
    assert not random.HasField("sanity")


def test_guided_backprop_barely_changes_when_the_top_layers_are_random(
    full: list[epb.EvaluateEvent],
) -> None:
    """Adebayo et al. 2018's finding: guided backprop ignores the top of the network."""
    methods = by_method(full[-1].report)
    guided, gradcam = methods["guided_backprop"].sanity, methods["gradcam"].sanity
    assert not guided.passed and guided.correlation >= 0.5
    assert guided.stages[0].correlation.mean > gradcam.stages[0].correlation.mean + 0.3
    assert len(guided.stages) == 5
    assert guided.stages[0].layers_randomised < guided.stages[-1].layers_randomised
    assert guided.stages[-1].layer == "features.block1.0"  # every layer, the first conv last


def test_the_same_request_gives_the_same_report(
    server: ServerThread, full: list[epb.EvaluateEvent]
) -> None:
    again = events(
        server.address,
        evaluation(boxes=BOXES, sanity_check=True, include_random=True, seed=4),
    )[-1].report
    first = full[-1].report
    for a, b in zip(first.methods, again.methods, strict=True):
        assert {k: list(v.values) for k, v in a.scores.items()} == {
            k: list(v.values) for k, v in b.scores.items()
        }
        assert a.sanity == b.sanity


def test_options_targets_and_metrics_are_honoured(server: ServerThread) -> None:
    report = events(
        server.address,
        evaluation(
            methods=["occlusion"],
            images=IMAGES[:2],
            targets=[3, 3],
            metrics=["deletion"],
            faithfulness_options=pb.FaithfulnessOptions(steps=8),
            method_options={"occlusion": epb.MethodOptions(options={"stride": _number(8)})},
        ),
    )[-1].report
    assert list(report.targets) == [3, 3]
    assert [m.name for m in report.metrics] == ["deletion"]
    assert report.faithfulness_options.steps == 8
    assert list(report.methods[0].scores) == ["deletion"]


def _number(value: float) -> pb.OptionValue:
    return pb.OptionValue(number=value)


def test_an_indexed_set_is_evaluated_from_its_kept_pictures(server: ServerThread) -> None:
    name = f"eval-{uuid.uuid4().hex[:8]}"
    sets = imagesets_pb2_grpc.ImageSetServiceStub(grpc.insecure_channel(server.address))

    def messages() -> Iterator[spb.IndexImagesRequest]:
        yield spb.IndexImagesRequest(set=name, model="demo")
        yield spb.IndexImagesRequest(
            images=[spb.SetImage(id=f"{i:02d}", encoded=x.encoded) for i, x in enumerate(IMAGES)]
        )

    assert list(sets.IndexImages(messages(), timeout=120))[-1].done
    from_set = events(server.address, evaluation(set=name, methods=["gradcam"]))[-1].report
    inline = events(server.address, evaluation(methods=["gradcam"]))[-1].report
    assert list(from_set.targets) == list(inline.targets)
    for score in ("deletion", "insertion"):  # the kept pictures are 8-bit: close, not equal
        assert from_set.methods[0].scores[score].mean == pytest.approx(
            inline.methods[0].scores[score].mean, abs=0.02
        )


@pytest.fixture(scope="module")
def small_server() -> Iterator[ServerThread]:
    """The demo model alone, one job at a time, small evaluation budgets."""
    thread = ServerThread(
        settings_for(None, max_jobs=1, max_evaluation_images=8, max_evaluation_maps=60)
    )
    thread.start()
    yield thread
    thread.stop()


def running(server: ServerThread) -> float:
    assert server.runtime is not None
    return metric_value(server.runtime.metrics.registry, "camserve_jobs_running")


def test_cancelling_stops_the_evaluation_and_frees_its_slot(small_server: ServerThread) -> None:
    request = evaluation(
        methods=["scorecam"], images=IMAGES[:8], sanity_check=True, sanity_stages=6
    )
    call = evaluate_stub(small_server.address).Evaluate(request, timeout=300)
    first = next(call)
    assert first.progress.done == 2 and first.progress.total == 56
    call.cancel()
    assert wait_for(lambda: running(small_server) == 0, timeout_s=60)
    assert small_server.runtime is not None
    cancelled = {"model": "demo", "method": "evaluate", "outcome": "cancelled"}
    registry = small_server.runtime.metrics.registry
    assert metric_value(registry, "camserve_jobs_total", cancelled) == 1
    report = events(small_server.address, evaluation(methods=["gradcam"], images=IMAGES[:2]))
    assert report[-1].report.methods[0].method == "gradcam"


def test_evaluations_share_the_job_limit_with_optimisation_jobs(
    small_server: ServerThread,
) -> None:
    jobs = jobs_pb2_grpc.VisualizeServiceStub(grpc.insecure_channel(small_server.address))
    long_job = jpb.VisualizeRequest(
        model="demo",
        method="activation_maximization",
        target=0,
        options={"steps": _number(2000)},
    )
    call = jobs.Visualize(long_job, timeout=300)  # runs whether or not it is read
    try:
        assert wait_for(lambda: running(small_server) == 1, timeout_s=60)
        with pytest.raises(grpc.RpcError) as refused:
            events(small_server.address, evaluation(methods=["gradcam"], images=IMAGES[:1]))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-jobs 1" in (refused.value.details() or "")
    finally:
        call.cancel()
    assert wait_for(lambda: running(small_server) == 0, timeout_s=60)


BAD_INPUT: dict[str, tuple[epb.EvaluateRequest, grpc.StatusCode, str]] = {
    "unknown model": (evaluation(model="nope"), grpc.StatusCode.NOT_FOUND, "served models"),
    "no method": (evaluation(methods=[]), grpc.StatusCode.INVALID_ARGUMENT, "at least one"),
    "unknown method": (
        evaluation(methods=["nope"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "valid methods",
    ),
    "a method twice": (
        evaluation(methods=["gradcam", "gradcam"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "once",
    ),
    "no map per class": (
        evaluation(methods=["embedding"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no map per target class",
    ),
    "options of another method": (
        evaluation(method_options={"occlusion": epb.MethodOptions()}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not among the evaluated",
    ),
    "a bad option": (
        evaluation(
            methods=["occlusion"],
            images=IMAGES[:1],
            method_options={"occlusion": epb.MethodOptions(options={"stride": _number(0)})},
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "stride",
    ),
    "no image": (evaluation(images=[]), grpc.StatusCode.INVALID_ARGUMENT, "no image"),
    "images and a set": (
        evaluation(images=IMAGES[:1], set="s"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not both",
    ),
    "unknown set": (evaluation(set="no-such-set"), grpc.StatusCode.NOT_FOUND, "no-such-set"),
    "too many targets": (
        evaluation(images=IMAGES[:2], targets=[0]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "one per image",
    ),
    "target out of range": (
        evaluation(images=IMAGES[:1], targets=[6]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "6 classes",
    ),
    "unknown score": (
        evaluation(images=IMAGES[:1], metrics=["nope"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "valid scores",
    ),
    "pointing without boxes": (
        evaluation(images=IMAGES[:1], metrics=["pointing_game"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "needs boxes",
    ),
    "an empty box": (
        evaluation(images=IMAGES[:1], boxes=[epb.ImageBoxes(boxes=[epb.Box(x0=5, x1=5, y1=3)])]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "x0 < x1",
    ),
    "tolerance out of range": (
        evaluation(images=IMAGES[:1], boxes=BOXES[:1], pointing_tolerance=1001),
        grpc.StatusCode.INVALID_ARGUMENT,
        "[0, 1000]",
    ),
    "too many stages": (
        evaluation(images=IMAGES[:1], sanity_check=True, sanity_stages=17),
        grpc.StatusCode.INVALID_ARGUMENT,
        "[1, 16]",
    ),
    "too many images": (
        evaluation(images=IMAGES[:9]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "--max-evaluation-images",
    ),
    "too many maps": (
        evaluation(images=IMAGES[:8], sanity_check=True),
        grpc.StatusCode.INVALID_ARGUMENT,
        "--max-evaluation-maps",
    ),
    "not an image": (
        evaluation(images=[pb.ImageInput(encoded=b"not an image")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "image",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_before_any_work(small_server: ServerThread, case: str) -> None:
    request, code, expected = BAD_INPUT[case]
    with pytest.raises(grpc.RpcError) as failure:
        events(small_server.address, request)
    assert failure.value.code() == code
    assert expected in (failure.value.details() or "")
    assert running(small_server) == 0


def test_a_long_evaluation_outlives_the_connection_age() -> None:
    """Connections are aged out for rebalancing; a call in flight keeps its connection
    for --max-connection-age-grace-s, so a long job is not cut off mid-stream."""
    thread = ServerThread(
        settings_for(
            None, max_connection_age_s=0.25, max_connection_age_grace_s=120, grace_period_s=0.25
        )
    )
    thread.start()
    try:
        request = evaluation(methods=["scorecam"], images=IMAGES[:4], sanity_check=True)
        stream = events(thread.address, request)
        *progress, last = stream
        assert progress[-1].progress.elapsed_ms > 750  # past the age and its old grace
        assert last.WhichOneof("event") == "report"
    finally:
        thread.stop()


def test_the_sdk_evaluates_against_the_real_server(server: ServerThread) -> None:
    from camserve import ExplainClient

    seen: list[int] = []
    with ExplainClient(server.address, timeout=120) as client:
        report = client.evaluate(
            model="demo",
            methods=["gradcam", "saliency"],
            images=[s.image for s in SAMPLES[:6]],
            boxes=[[(b.x0, b.y0, b.x1, b.y1) for b in boxes.boxes] for boxes in BOXES[:6]],
            sanity_check=True,
            sanity_stages=2,
            progress=lambda event: seen.append(event.done),
        )
    assert seen == sorted(seen) and seen[-1] == 6 * 2 * 3
    assert report.methods == ["gradcam", "saliency", "random"]
    assert report.scores["gradcam"]["deletion"] < report.scores["random"]["deletion"]
    assert report.summary("gradcam", "pointing_game").values.shape == (6,)
    assert report.sanity_passed["gradcam"]
    assert len(report.sanity_curves["gradcam"]) == 2
    assert report.ranking("insertion")[-1] == "random"


def test_the_cli_writes_a_ranked_html_report_from_the_real_server(
    server: ServerThread, tmp_path: Path
) -> None:
    from camserve.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    boxes = {}
    for i, sample in enumerate(SAMPLES[:4]):
        (folder / f"{i}.png").write_bytes(png_bytes(sample.image))
        x0, y0, x1, y1 = sample.box
        boxes[f"{i}.png"] = [[x0, y0, x1 + 1, y1 + 1]]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    out = tmp_path / "eval.html"
    code = main(
        [
            "--server",
            server.address,
            "evaluate",
            str(folder),
            "--model",
            "demo",
            "--methods",
            "gradcam,guided_backprop",
            "--boxes",
            str(tmp_path / "boxes.json"),
            "--sanity-check",
            "--sanity-stages",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    page = out.read_text()
    assert "gradcam" in page and "guided_backprop" in page and "pointing_game" in page
    assert "data:image/png;base64," in page


def test_a_set_too_large_is_refused_before_its_members_are_read(
    small_server: ServerThread,
) -> None:
    name = f"large-{uuid.uuid4().hex[:8]}"
    sets = imagesets_pb2_grpc.ImageSetServiceStub(grpc.insecure_channel(small_server.address))

    def messages() -> Iterator[spb.IndexImagesRequest]:
        yield spb.IndexImagesRequest(set=name, model="demo")
        yield spb.IndexImagesRequest(
            images=[spb.SetImage(id=f"{i:02d}", encoded=x.encoded) for i, x in enumerate(IMAGES)]
        )

    assert list(sets.IndexImages(messages(), timeout=120))[-1].indexed == 12
    with pytest.raises(grpc.RpcError) as refused:
        events(small_server.address, evaluation(set=name, methods=["gradcam"]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "has 12 images; at most 8" in (refused.value.details() or "")
