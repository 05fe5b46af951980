"""The ``camserve`` CLI, run in-process through ``main([...])`` against the test server."""

from __future__ import annotations

import io
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camserve._progress import ProgressBar
from camserve.cli import main
from camserve_server.demo import SAMPLES_DIR
from server_harness import ServerThread

SAMPLES = sorted(SAMPLES_DIR.glob("*.png"))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder of three demo samples and one larger random photo-like JPEG."""
    folder = tmp_path / "images"
    folder.mkdir()
    for sample in SAMPLES[:3]:
        shutil.copy(sample, folder / sample.name)
    pixels = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "noise.jpg", quality=90)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("camserve: ")
    return lines[0]


def test_explain_writes_one_overlay_per_image(
    server: ServerThread, tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "nested"
    code = main(["--server", server.address, "explain", str(images), "--model", "demo",
                 "--plain", "--out", str(out)])  # fmt: skip
    assert code == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "00_circle_gradcam.png",
        "01_square_gradcam.png",
        "02_triangle_gradcam.png",
        "noise_gradcam.png",
    ]
    assert Image.open(out / "noise_gradcam.png").size == (120, 90)
    assert Image.open(out / "00_circle_gradcam.png").size == (64, 64)
    stdout = capsys.readouterr().out
    assert "circle" in stdout and "00_circle_gradcam.png" in stdout


def test_explain_options_after_the_command_and_default_model(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["explain", str(SAMPLES[0]), str(SAMPLES[1]), "--out", str(tmp_path),
                 "--method", "saliency", "--target", "2", "--server", server.address,
                 "--timeout", "20"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "00_circle_saliency.png",
        "01_square_saliency.png",
    ]


def test_explain_names_duplicate_stems_apart(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAMSERVE_SERVER", server.address)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(SAMPLES[1], other / SAMPLES[0].name)
    out = tmp_path / "out"
    code = main(["explain", str(SAMPLES[0]), str(other / SAMPLES[0].name), "--plain",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "00_circle_gradcam-2.png",
        "00_circle_gradcam.png",
    ]


def test_report_writes_html_with_an_overlay_per_image_and_method(
    server: ServerThread, tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.html"
    code = main(["--server", server.address, "report", str(images), "--model", "demo",
                 "--methods", "gradcam,saliency,occlusion", "--out", str(report)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    html = report.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<figure>") == 4 * (1 + 3)
    for name in ("00_circle.png", "noise.jpg"):
        for method in ("gradcam", "saliency", "occlusion"):
            assert f"{name}: {method}" in html
    assert "circle" in html


def test_embed_plots_and_saves_vectors(
    server: ServerThread, tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot, saved = tmp_path / "map.png", tmp_path / "vectors.npz"
    code = main(["--server", server.address, "embed", str(images), "--model", "r18",
                 "--plot", str(plot), "--save", str(saved)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert Image.open(plot).size[1] == 600
    data = np.load(saved)
    assert data["vectors"].shape == (4, 512)
    assert list(data["names"]) == ["00_circle.png", "01_square.png", "02_triangle.png", "noise.jpg"]
    assert data["classes"].shape == (4,)


def test_models_methods_and_health(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--server", server.address, "models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["demo", "r18", "mnv3"]
    assert main(["--server", server.address, "methods"]) == 0
    listing = capsys.readouterr().out
    assert "gradcam" in listing and "occlusion" in listing and "window=[32, 32]" in listing
    assert main(["health", "--server", server.address]) == 0
    assert "SERVING" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command", [["models"], ["health"], ["explain", str(SAMPLES[0]), "--out", "unused"]]
)
def test_an_unreachable_server_fails_in_one_line_within_the_deadline(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code = main(["--server", f"127.0.0.1:{_closed_port()}", "--timeout", "2", *command])
    assert time.monotonic() - started < 3.5
    assert code == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "127.0.0.1" in line


def test_refusals_fail_in_one_line(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--server", server.address]
    assert main([*base, "explain", str(SAMPLES[0]), "--model", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown model 'nope'" in _one_line_error(capsys.readouterr().err)
    code = main([*base, "explain", str(SAMPLES[0]), "--method", "bogus", "--out", str(tmp_path)])
    assert code == 1
    assert "bogus" in _one_line_error(capsys.readouterr().err)
    code = main([*base, "report", str(SAMPLES_DIR), "--methods", "gradcam,nope",
                 "--out", str(tmp_path / "r.html")])  # fmt: skip
    assert code == 1
    assert "nope" in _one_line_error(capsys.readouterr().err)
    assert main([*base, "explain", str(tmp_path / "missing.png"), "--out", str(tmp_path)]) == 1
    assert "missing.png" in _one_line_error(capsys.readouterr().err)
    code = main([*base, "explain", str(SAMPLES[0]), "--colormap", "nope", "--out", str(tmp_path)])
    assert code == 1
    assert "colormap" in _one_line_error(capsys.readouterr().err)
    code = main([*base, "explain", str(SAMPLES[0]), "--target", "-1", "--out", str(tmp_path)])
    assert code == 1
    assert "targets" in _one_line_error(capsys.readouterr().err)


def test_a_refused_image_fails_that_image_only(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    out = tmp_path / "out"
    code = main(["--server", server.address, "explain", str(SAMPLES[0]), str(bad),
                 "--out", str(out)])  # fmt: skip
    assert code == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "bad.png" in line and "INVALID_ARGUMENT" in line
    assert [p.name for p in out.iterdir()] == ["00_circle_gradcam.png"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain"]) == 2
    assert main(["--timeout", "-1", "models"]) == 2
    assert main(["explain", "x.png", "--out", "o", "--alpha", "2"]) == 2
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_progress_bar_writes_lines_in_a_log_and_ends_them() -> None:
    stream = io.StringIO()
    bar = ProgressBar("explain", 4, stream=stream, enabled=True, log_interval=0.0)
    for done in range(1, 5):
        bar(done, 4)
    bar.close()
    text = stream.getvalue()
    assert text.startswith("explain: 1/4 (25%)")
    assert "explain: 4/4 (100%)" in text
    assert text.endswith("\n")
    quiet = io.StringIO()
    silent = ProgressBar("explain", 4, stream=quiet)  # a log, a short run: no line
    silent(1, 4)
    silent.close()
    assert quiet.getvalue() == ""
