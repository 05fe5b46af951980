"""``visualize`` in the blocking and asyncio clients, and the ``visualize`` and
``adversarial`` commands, against the test server's demo model."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rpc_helpers import metric_value

from camserve import AsyncExplainClient, ExplainClient, InvalidArgumentError
from camserve._job_commands import parse_fraction, parse_indices, parse_option
from camserve.cli import main
from camserve.jobs import VisualizationEvent, VisualizationProgress, VisualizationResult
from camserve_server.demo import SAMPLES_DIR
from server_harness import ServerThread

CIRCLE = SAMPLES_DIR / "00_circle.png"


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[ExplainClient]:
    with ExplainClient(server.address, timeout=60) as c:
        yield c


def _running(server: ServerThread) -> float:
    assert server.runtime is not None
    return metric_value(server.runtime.metrics.registry, "camserve_jobs_running")


def test_visualize_returns_tensor_image_scores_and_trace(client: ExplainClient) -> None:
    seen: list[VisualizationProgress] = []
    result = client.visualize(
        method="activation_maximization",
        model="demo",
        layer="features",
        channel=5,
        options={"steps": 10},
        on_progress=seen.append,
        preview_every=5,
        seed=1,
    )
    assert [p.step for p in seen] == list(range(1, 11))
    assert [p.step for p in seen if p.preview is not None] == [5, 10]
    assert result.tensor.dtype == np.float32
    assert result.tensor.shape == (3, 64, 64)
    assert result.image.dtype == np.uint8
    assert result.image.shape == (64, 64, 3)
    assert result.trace.shape == (10,)
    assert result.layer == "features"
    assert len(result.scores) == 5
    assert result.top is result.scores[0]
    assert result.to_pil().size == (64, 64)


def test_the_tensor_is_the_images_normalised_form(client: ExplainClient) -> None:
    from camserve_server.demo import MEAN, STD

    result = client.visualize(method="fooling", model="demo", target=2, options={"steps": 6})
    pixels = result.tensor * np.asarray(STD)[:, None, None] + np.asarray(MEAN)[:, None, None]
    expected = np.rint(np.clip(pixels, 0, 1) * 255).transpose(1, 2, 0)
    assert np.abs(result.image.astype(np.int16) - expected).max() <= 1


def test_visualize_events_yields_progress_then_the_result(client: ExplainClient) -> None:
    events = list(
        client.visualize_events(
            method="deepdream", model="demo", image=CIRCLE, options={"steps": 6, "octaves": 2}
        )
    )
    assert all(isinstance(e, VisualizationProgress) for e in events[:-1])
    assert isinstance(events[-1], VisualizationResult)
    assert events[-1].steps == len(events) - 1


def test_leaving_the_event_loop_early_cancels_the_job(
    client: ExplainClient, server: ServerThread
) -> None:
    events = client.visualize_events(
        method="activation_maximization", model="demo", target=3, options={"steps": 2000}, seed=9
    )
    for event in events:
        assert isinstance(event, VisualizationProgress)
        if event.step == 3:
            break
    events.close()
    deadline = time.monotonic() + 10
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _running(server) == 0


def test_adversarial_reports_predictions_before_and_after(client: ExplainClient) -> None:
    result = client.visualize(
        method="adversarial", model="demo", image=CIRCLE, target=3, options={"epsilon": "8/255"}
    )
    assert result.predictions["original"][0].name == "circle"
    assert set(result.images) >= {"original", "perturbation"}
    original = result.images["original"].tensor
    assert original is not None
    assert original.shape == result.tensor.shape


def test_server_and_local_refusals_raise_invalid_argument(client: ExplainClient) -> None:
    with pytest.raises(InvalidArgumentError, match="needs an input image"):
        client.visualize(method="deepdream", model="demo")
    with pytest.raises(InvalidArgumentError, match="channel must be in"):
        client.visualize(method="activation_maximization", model="demo", channel=-1)
    with pytest.raises(InvalidArgumentError, match="method is required"):
        client.visualize(method="", model="demo")


def test_job_methods_lists_ranges(client: ExplainClient) -> None:
    methods = {m.id: m for m in client.job_methods()}
    epsilon = methods["adversarial"].options["epsilon"]
    assert epsilon.maximum == 1.0
    assert epsilon.default == pytest.approx(8 / 255)
    assert methods["deepdream"].needs_image


def test_async_client_mirrors_visualize(server: ServerThread) -> None:
    async def scenario() -> tuple[VisualizationResult, list[int], list[VisualizationEvent]]:
        async with AsyncExplainClient(server.address, timeout=60) as client:
            steps: list[int] = []

            async def on_progress(event: VisualizationProgress) -> None:
                steps.append(event.step)

            result = await client.visualize(
                method="activation_maximization",
                model="demo",
                target=1,
                options={"steps": 5},
                on_progress=on_progress,
                seed=4,
            )
            events = [
                e
                async for e in client.visualize_events(
                    method="activation_maximization",
                    model="demo",
                    target=1,
                    options={"steps": 5},
                    seed=4,
                )
            ]
            methods = await client.job_methods()
            assert any(m.id == "deepdream" for m in methods)
            return result, steps, events

    result, steps, events = asyncio.run(scenario())
    assert steps == [1, 2, 3, 4, 5]
    assert result.tensor.shape == (3, 64, 64)
    assert len(events) == 1  # the same request again: the cached result alone
    assert isinstance(events[0], VisualizationResult)
    assert events[0].cached
    assert np.array_equal(events[0].tensor, result.tensor)


def test_cli_visualize_writes_a_labelled_channel_grid(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "grids" / "grid.png"
    code = main(["--server", server.address, "visualize", "--method", "activation_maximization",
                 "--model", "demo", "--layer", "features", "--channels", "0-3", "--steps", "6",
                 "--columns", "2", "--cell", "64", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    with Image.open(out) as grid:
        assert grid.mode == "RGB"
        width, height = grid.size
    assert width >= 2 * 64
    assert height >= 2 * 64
    assert "4 pictures" in capsys.readouterr().out


def test_cli_adversarial_writes_the_panel_and_images(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "adv"
    code = main(["--server", server.address, "adversarial", str(CIRCLE), "--model", "demo",
                 "--epsilon", "8/255", "--target", "3", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "00_circle_adversarial.png",
        "00_circle_adversarial_panel.png",
        "00_circle_perturbation.png",
    ]
    with Image.open(out / "00_circle_adversarial_panel.png") as panel:
        assert panel.size[0] > 3 * 224
    with Image.open(out / "00_circle_adversarial.png") as picture:
        assert picture.size == (64, 64)
    assert "circle" in capsys.readouterr().out


def test_cli_refusals_are_one_line(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--server", server.address, "visualize", "--method", "deepdream",
                 "--model", "demo", "--out", "never.png"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("camserve: error: INVALID_ARGUMENT")
    assert "needs an input image" in err


def test_cli_argument_parsers() -> None:
    assert parse_indices("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_fraction("8/255") == pytest.approx(8 / 255)
    assert parse_option("lr=0.05") == ("lr", 0.05)
    assert parse_option("steps=20") == ("steps", 20)
    assert parse_option("attack=fgsm") == ("attack", "fgsm")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_indices("5-2")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_fraction("8/0")
