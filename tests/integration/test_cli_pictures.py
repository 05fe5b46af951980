"""``camserve explain`` and ``report`` give a picture for every method the server lists:
captioned figures with colour scales, feature maps, channel profiles, filters and
embeddings, with method options and targets."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camserve import ExplainClient
from camserve.cli import main
from camserve_server.demo import SAMPLES_DIR
from server_harness import ServerThread

SAMPLES = sorted(SAMPLES_DIR.glob("*.png"))
pytest.importorskip("matplotlib")
pytest.importorskip("jinja2")


def _demo_methods(server: ServerThread) -> list[str]:
    with ExplainClient(server.address, timeout=30) as client:
        (demo,) = [m for m in client.models() if m.name == "demo"]
    return demo.methods


def test_every_listed_method_gives_a_picture(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    methods = _demo_methods(server)
    assert {"feature_maps", "channel_profile", "filters", "embedding", "occlusion"} <= set(methods)
    for method in methods:
        out = tmp_path / method
        code = main(["--server", server.address, "--timeout", "60", "explain", str(SAMPLES[0]),
                     "--model", "demo", "--method", method, "--out", str(out)])  # fmt: skip
        assert code == 0, f"{method}: {capsys.readouterr().err}"
        written = sorted(out.iterdir())
        assert len(written) == 1, (method, written)
        if method == "embedding":
            assert written[0].suffix == ".npy"
            assert np.load(written[0]).ndim == 1
            continue
        assert written[0].suffix == ".png"
        with Image.open(written[0]) as picture:
            assert min(picture.size) >= 224, (method, picture.size)
            assert np.asarray(picture.convert("RGB")).std() > 10, method  # not blank
    assert "INTERNAL" not in capsys.readouterr().err


def test_a_map_figure_holds_the_input_and_one_panel_per_target(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    base = ["--server", server.address, "explain", str(SAMPLES[0]), "--model", "demo"]
    assert main([*base, "--out", str(one)]) == 0
    assert main([*base, "--targets", "0,2", "--out", str(two)]) == 0
    with (
        Image.open(one / "00_circle_gradcam.png") as single,
        Image.open(two / "00_circle_gradcam.png") as double,
    ):
        assert single.height >= 320 + 60  # a panel of 320 px, its caption and scale
        assert double.width > single.width + 300  # one more panel
    assert "circle" in capsys.readouterr().out


def test_method_options_reach_the_server_and_bad_ones_are_named(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--server", server.address, "explain", str(SAMPLES[1]), "--model", "demo",
            "--method", "occlusion"]  # fmt: skip
    assert main([*base, "--option", "window=8", "--option", "stride=4", "--out",
                 str(tmp_path / "a")]) == 0  # fmt: skip
    code = main([*base, "--option", "window=100000", "--out", str(tmp_path / "b")])
    assert code == 1
    assert "window" in capsys.readouterr().err
    code = main([*base, "--option", "bogus=1", "--out", str(tmp_path / "c")])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "bogus" in err and "window" in err  # names the options occlusion takes


def test_feature_maps_channel_profile_and_embedding_print_what_they_show(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--server", server.address, "explain", str(SAMPLES[2]), "--model", "demo"]
    assert main([*base, "--method", "feature_maps", "--option", "top_k=4", "--out",
                 str(tmp_path)]) == 0  # fmt: skip
    assert "strongest: ch " in capsys.readouterr().out
    assert main([*base, "--method", "channel_profile", "--out", str(tmp_path)]) == 0
    assert "strongest: ch " in capsys.readouterr().out
    code = main([*base, "--method", "embedding", "--option", "normalize=true",
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    line = capsys.readouterr().out
    assert "dim " in line and "L2 norm 1" in line and "largest components" in line
    vector = np.load(tmp_path / "02_triangle_embedding.npy")
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4


def test_report_takes_options_targets_and_writes_pictures_beside(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.html"
    code = main(["--server", server.address, "report", str(SAMPLES_DIR), "--model", "demo",
                 "--methods", "gradcam,integrated_gradients,occlusion",
                 "--option", "occlusion.window=8", "--targets", "1",
                 "--images-beside", "--out", str(report)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    html = report.read_text()
    assert "occlusion window=8 stride=4" in html
    assert html.count("· square · p") == 3 * len(SAMPLES)  # every map explains class 1
    pictures = list((tmp_path / "report_files").iterdir())
    assert len(pictures) == len(SAMPLES) * (1 + 3)
    assert report.stat().st_size < 40_000
    code = main(["--server", server.address, "report", str(SAMPLES_DIR),
                 "--methods", "gradcam,feature_maps", "--out", str(report)])  # fmt: skip
    assert code == 1
    assert "camserve explain --method" in capsys.readouterr().err


def test_without_matplotlib_maps_are_bare_overlays_and_figures_name_the_extra(
    server: ServerThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as in the base install
    base = ["--server", server.address, "explain", str(SAMPLES[0]), "--model", "demo"]
    assert main([*base, "--out", str(tmp_path / "maps")]) == 0
    with Image.open(tmp_path / "maps" / "00_circle_gradcam.png") as overlay:
        assert overlay.size == (64, 64)  # the bare overlay, at the image's size
    assert "pip install 'camserve[plots]'" in capsys.readouterr().err
    assert main([*base, "--method", "embedding", "--out", str(tmp_path / "vectors")]) == 0
    code = main([*base, "--method", "feature_maps", "--out", str(tmp_path / "grid")])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'camserve[plots]'" in err
