"""``evaluate`` in the blocking and asyncio clients and the ``evaluate`` command, against a
fake ``EvaluateService`` on a real port (``evaluation_reports``): progress reaches the
callback, the report comes back read, the server's refusals are the SDK's errors, and
leaving the stream, an interrupt or a cancelled task cancels the call on the server."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from rpc_helpers import wait_for

from camserve import (
    AsyncExplainClient,
    ExplainClient,
    InternalError,
    InvalidArgumentError,
    OverloadedError,
)
from camserve.cli import main
from camserve.evaluation import Evaluation, EvaluationEvent, EvaluationProgress
from camserve_server.demo import SAMPLES_DIR
from evaluation_reports import FakeEvaluateService, fake_evaluate_server, report_proto

SAMPLES = sorted(SAMPLES_DIR.glob("*.png"))[:3]
SANITY = {"gradcam": [[0.6, 0.5, 0.4], [0.1, 0.0, 0.2]], "saliency": [[0.9] * 3, [0.88] * 3]}


@pytest.fixture
def service() -> FakeEvaluateService:
    return FakeEvaluateService(report=report_proto(targets=(0, 1, 2), sanity=SANITY), steps=6)


@pytest.fixture
def address(service: FakeEvaluateService) -> Iterator[str]:
    with fake_evaluate_server(service) as where:
        yield where


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for sample in SAMPLES:
        shutil.copy(sample, folder / sample.name)
    return folder


def _cancelled(service: FakeEvaluateService) -> bool:
    return wait_for(service.cancelled.is_set, timeout_s=10)


def test_evaluate_reports_progress_and_returns_the_report(
    address: str, service: FakeEvaluateService
) -> None:
    seen: list[EvaluationProgress] = []
    with ExplainClient(address, timeout=20) as client:
        result = client.evaluate(
            model="demo",
            methods=["gradcam", "saliency"],
            images=SAMPLES,
            sanity_check=True,
            progress=seen.append,
        )
    assert [(p.done, p.total) for p in seen] == [(k, 6) for k in range(1, 7)]
    assert {p.stage for p in seen} == {"explain", "sanity"}
    assert result.methods == ["gradcam", "saliency", "random"]
    assert result.sanity_passed == {"gradcam": True, "saliency": False}
    (request,) = service.requests
    assert list(request.methods) == ["gradcam", "saliency"] and len(request.images) == 3
    assert request.include_random and request.sanity_check
    remaining = service.time_remaining[0]
    # the default deadline; gRPC's timeout header carries at most 8 digits, rounded up
    assert remaining is not None and 20 * 3 * 6 - 5 < remaining <= 20 * 3 * 6 + 1
    assert not service.cancelled.is_set()


def test_a_timeout_given_is_the_deadline(address: str, service: FakeEvaluateService) -> None:
    with ExplainClient(address, timeout=20) as client:
        client.evaluate(model="demo", methods="gradcam", set="shapes", timeout=7, progress=False)
    remaining = service.time_remaining[0]
    assert remaining is not None and 2 < remaining <= 7
    assert service.requests[0].set == "shapes"


def test_evaluate_events_yield_progress_then_the_report(address: str) -> None:
    with ExplainClient(address) as client:
        events = list(client.evaluate_events(model="demo", methods=["gradcam"], images=SAMPLES))
    assert all(isinstance(e, EvaluationProgress) for e in events[:-1]) and len(events) == 7
    assert isinstance(events[-1], Evaluation)


def test_leaving_the_event_loop_cancels_the_evaluation(
    address: str, service: FakeEvaluateService
) -> None:
    service.pause_s = 0.2
    with ExplainClient(address) as client:
        events = client.evaluate_events(model="demo", methods=["gradcam"], images=SAMPLES)
        for event in events:
            assert isinstance(event, EvaluationProgress)
            if event.done == 2:
                break
        events.close()
        assert _cancelled(service)
    assert service.events_sent < 6


def test_an_interrupt_in_the_callback_cancels_the_evaluation(
    address: str, service: FakeEvaluateService
) -> None:
    service.pause_s = 0.2

    def interrupt(event: EvaluationProgress) -> None:
        if event.done == 2:
            raise KeyboardInterrupt

    with ExplainClient(address) as client, pytest.raises(KeyboardInterrupt):
        client.evaluate(model="demo", methods=["gradcam"], images=SAMPLES, progress=interrupt)
    assert _cancelled(service)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, OverloadedError),
    ],
)
def test_the_servers_refusals_are_the_sdks_errors(
    address: str, service: FakeEvaluateService, code: grpc.StatusCode, error: type[Exception]
) -> None:
    service.error = (code, "no method 'nope' for model demo")
    with ExplainClient(address) as client, pytest.raises(error, match="no method 'nope'"):
        client.evaluate(model="demo", methods=["nope"], images=SAMPLES, progress=False)


def test_a_stream_without_a_report_is_an_internal_error(
    address: str, service: FakeEvaluateService
) -> None:
    service.report = None
    with ExplainClient(address) as client, pytest.raises(InternalError, match="without a result"):
        client.evaluate(model="demo", methods=["gradcam"], images=SAMPLES, progress=False)


def test_the_async_client_mirrors_evaluate(address: str) -> None:
    async def scenario() -> tuple[Evaluation, list[int], list[EvaluationEvent]]:
        async with AsyncExplainClient(address, timeout=20) as client:
            done: list[int] = []

            async def on_progress(event: EvaluationProgress) -> None:
                done.append(event.done)

            result = await client.evaluate(
                model="demo", methods=["gradcam"], images=SAMPLES, progress=on_progress
            )
            events = [
                e
                async for e in client.evaluate_events(
                    model="demo", methods=["gradcam"], images=SAMPLES
                )
            ]
            return result, done, events

    result, done, events = asyncio.run(scenario())
    assert done == [1, 2, 3, 4, 5, 6]
    assert result.ranking("deletion")[0] == "gradcam"
    assert isinstance(events[-1], Evaluation) and len(events) == 7


def test_cancelling_the_asyncio_task_cancels_the_evaluation(
    address: str, service: FakeEvaluateService
) -> None:
    service.pause_s = 0.2

    async def scenario() -> None:
        async with AsyncExplainClient(address) as client:
            started = asyncio.Event()
            task = asyncio.create_task(
                client.evaluate(
                    model="demo",
                    methods=["gradcam"],
                    images=SAMPLES,
                    progress=lambda event: started.set(),
                )
            )
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert _cancelled(service)


def test_async_arguments_are_checked_when_awaited() -> None:
    async def scenario() -> None:
        client = AsyncExplainClient("127.0.0.1:1")
        try:
            pending = client.evaluate(model="demo", methods=["gradcam"])  # nothing checked yet
            with pytest.raises(InvalidArgumentError, match="give exactly one of images="):
                await pending
            events = client.evaluate_events(model="demo", methods=[], set="s")
            with pytest.raises(InvalidArgumentError, match="methods is empty"):
                await events.__anext__()
        finally:
            await client.close()

    asyncio.run(scenario())


def test_cli_evaluate_prints_the_ranking_and_writes_html_and_json(
    address: str,
    service: FakeEvaluateService,
    images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"01_square.png": [[10, 12, 40, 44]], "00_circle.png": []}))
    page, data = tmp_path / "out" / "eval.html", tmp_path / "out" / "eval.json"
    code = main(["--server", address, "evaluate", str(images), "--model", "demo",
                 "--methods", "gradcam,occlusion", "--metrics", "deletion,insertion",
                 "--targets", "0,1,2", "--boxes", str(boxes), "--pointing-tolerance", "4",
                 "--sanity-check", "--sanity-stages", "2", "--seed", "7", "--no-random",
                 "--option", "window=8", "--out", str(page), "--json", str(data)])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    (request,) = service.requests
    assert list(request.methods) == ["gradcam", "occlusion"] and len(request.images) == 3
    assert list(request.targets) == [0, 1, 2] and list(request.metrics) == ["deletion", "insertion"]
    assert [len(entry.boxes) for entry in request.boxes] == [0, 1, 0]  # file-name order
    assert request.boxes[1].boxes[0].x1 == 40 and request.pointing_tolerance == 4
    assert request.sanity_check and request.sanity_stages == 2 and request.seed == 7
    assert not request.include_random
    window = request.method_options["occlusion"].options["window"]
    assert window.number == 8 and "gradcam" not in request.method_options
    assert "deletion ↓ (lower is better)" in out and "   1. gradcam " in out
    assert "saliency   0.88  fails: maps barely change when the weights are random" in out
    assert f"wrote {page}" in out and f"wrote {data}" in out
    assert page.read_text().count("<img") == 3
    saved = json.loads(data.read_text())
    assert saved["images"] == [p.name for p in SAMPLES]
    assert saved["ranking"]["deletion"][0] == "gradcam"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--methods", "gradcam,feature_maps"], "feature_maps explain none"),
        (["--methods", "gradcam,nope"], "method 'nope' is not available for model 'demo'"),
        (["--methods", "gradcam", "--targets", "0,1"], "--targets gives 2 classes for 3 images"),
        (["--option", "window=8"], "--option window: no chosen method takes it"),
        (["--boxes", "BOXES"], "names files not among the images: other.png"),
    ],
)
def test_cli_refusals_are_one_line_before_any_evaluation(
    address: str,
    service: FakeEvaluateService,
    images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    message: str,
) -> None:
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"other.png": [[0, 0, 1, 1]]}))
    arguments = [str(boxes) if a == "BOXES" else a for a in arguments]
    if "--methods" not in arguments:
        arguments += ["--methods", "gradcam"]
    code = main(["--server", address, "evaluate", str(images), *arguments])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("camserve: error: ") and message in err
    assert not service.requests
