"""The HTML report opens in headless Chromium and shows every image, offline, each map at
a readable size with its caption and colour scale, in a grid as wide as the window; so
does the evaluation page: its ranked table, a readable chart per score and the sanity
curves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camserve import ExplainClient
from camserve.cli import main
from camserve.render import ReportEntry, explanation_panels, html_report
from camserve_server.demo import SAMPLES_DIR
from evaluation_reports import FakeEvaluateService, fake_evaluate_server, report_proto
from server_harness import ServerThread

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
CHECK_IMAGES = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const shown = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-images", images.length + "/" + shown);
});
</script>
"""
MEASURE = """
<script>
window.addEventListener("load", () => {
  const maps = Array.from(document.querySelectorAll("figure"))
    .filter((f) => f.querySelector(".scale"));
  const widths = maps.map((f) => Math.round(f.querySelector("img").getBoundingClientRect().width));
  const ramps = maps.map((f) => f.querySelector(".ramp"))
    .filter((r) => r && r.getBoundingClientRect().width > 100).length;
  const captions = maps.map((f) => f.querySelector("figcaption").textContent).join("|");
  const grid = document.querySelector(".grid").getBoundingClientRect().width;
  document.body.setAttribute("data-maps", maps.length + "/" + ramps);
  document.body.setAttribute("data-min-width", Math.min(...widths));
  document.body.setAttribute("data-grid-width", Math.round(grid));
  document.body.setAttribute("data-captions", captions);
});
</script>
"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("needs Debian's chromium (make test installs it where it can)")


@pytest.fixture(scope="module")
def report(server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A report of the demo samples with two methods each, written by the SDK and renderer."""
    entries = []
    with ExplainClient(server.address, timeout=60) as client:
        for path in sorted(SAMPLES_DIR.glob("*.png"))[:3]:
            panels = []
            for method in ("gradcam", "saliency"):
                ex = client.explain(image=path, model="demo", method=method, return_raw=True)
                panels += explanation_panels(path, ex)
            predictions = [(s.label, s.probability) for s in ex.scores[:3]]
            entries.append(ReportEntry(path.stem, path, predictions, panels))
    folder = tmp_path_factory.mktemp("report")
    page = folder / "report.html"
    page.write_text(html_report(entries, title="demo report"))
    return page, sum(1 + len(e.panels) for e in entries)


@pytest.fixture(scope="module")
def cli_report(server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo report as ``camserve report`` writes it: every kind of map."""
    page = tmp_path_factory.mktemp("cli-report") / "report.html"
    code = main(["--server", server.address, "--timeout", "120", "report", str(SAMPLES_DIR),
                 "--model", "demo", "--out", str(page), "--methods",
                 "gradcam,integrated_gradients,guided_backprop,occlusion"])  # fmt: skip
    assert code == 0
    return page


MEASURE_EVALUATION = """
<script>
window.addEventListener("load", () => {
  const rows = document.querySelectorAll("table.ranking tbody tr").length;
  const best = Array.from(document.querySelectorAll("table.ranking td.score"))
    .filter((td) => getComputedStyle(td).fontWeight >= 600).length;
  const charts = Array.from(document.querySelectorAll("section img"))
    .map((i) => Math.round(i.getBoundingClientRect().width));
  const verdicts = Array.from(document.querySelectorAll("ul.verdicts li"))
    .map((li) => li.className).join(",");
  document.body.setAttribute("data-rows", rows + "/" + best);
  document.body.setAttribute("data-min-chart", Math.min(...charts));
  document.body.setAttribute("data-verdicts", verdicts);
});
</script>
"""


@pytest.fixture(scope="module")
def cli_evaluation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The evaluation page as ``camserve evaluate --sanity-check`` writes it, the report
    streamed by a fake ``EvaluateService`` (three scores, three rows, two checked)."""
    nan = float("nan")
    scores = {
        "gradcam": {"deletion": [0.1, 0.2, 0.1], "insertion": [0.8, 0.7, 0.9],
                    "pointing_game": [1.0, 1.0, nan]},
        "saliency": {"deletion": [0.3, 0.2, 0.4], "insertion": [0.5, 0.6, 0.4],
                     "pointing_game": [0.0, 1.0, nan]},
        "random": {"deletion": [0.5, 0.6, 0.4], "insertion": [0.3, 0.2, 0.3],
                   "pointing_game": [0.0, 0.0, nan]},
    }  # fmt: skip
    sanity = {"gradcam": [[0.7, 0.6, 0.8], [0.1, 0.0, 0.2]], "saliency": [[0.9] * 3, [0.9] * 3]}
    service = FakeEvaluateService(
        report=report_proto(targets=(0, 1, 2), scores=scores, sanity=sanity)
    )
    page = tmp_path_factory.mktemp("cli-evaluation") / "eval.html"
    with fake_evaluate_server(service) as address:
        code = main(["--server", address, "evaluate", str(SAMPLES_DIR), "--model", "demo",
                     "--methods", "gradcam,saliency", "--sanity-check",
                     "--out", str(page)])  # fmt: skip
    assert code == 0
    return page


def test_report_is_self_contained(report: tuple[Path, int]) -> None:
    text = report[0].read_text()
    assert not re.search(r"(src|href)=[\"']https?:", text)
    assert text.count("<img") == report[1]


def _dom(chromium: str, page: Path, script: str, profile: Path, width: int = 1400) -> str:
    probe = page.with_name(f"probe-{page.name}")
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},2000",
         "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip


def _attribute(dom: str, name: str) -> str:
    found = re.search(rf'{name}="([^"]*)"', dom)
    assert found, f"{name} missing"
    return found.group(1)


def test_every_map_is_readable_captioned_and_scaled(cli_report: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    dom = _dom(chromium, cli_report, CHECK_IMAGES + MEASURE, tmp_path / "profile")
    samples = len(list(SAMPLES_DIR.glob("*.png")))
    assert _attribute(dom, "data-images") == f"{samples * 5}/{samples * 5}"
    assert _attribute(dom, "data-maps") == f"{samples * 4}/{samples * 3}"  # RGB: no ramp
    assert int(_attribute(dom, "data-min-width")) >= 224
    assert int(_attribute(dom, "data-grid-width")) > 1200  # the page's width, not a column
    captions = _attribute(dom, "data-captions").split("|")
    for method in ("gradcam", "integrated_gradients", "guided_backprop", "occlusion"):
        assert sum(c.startswith(f"{method} · ") and " · p = " in c for c in captions) == samples

    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}",
         f"--screenshot={shot}", "--window-size=1400,2000", cli_report.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    saturated = (np.abs(pixels[..., 0] - pixels[..., 2]) > 80).mean()
    assert saturated > 0.03, "too little of the page shows maps"


def test_report_shows_every_image_in_chromium(report: tuple[Path, int], tmp_path: Path) -> None:
    chromium = _chromium()
    page, expected = report
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", CHECK_IMAGES + "</body>"))
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert f'data-images="{expected}/{expected}"' in dom

    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}",
         f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.std() > 10, "the screenshot is blank"
    saturated = (np.abs(pixels[..., 0] - pixels[..., 2]) > 80).mean()
    assert saturated > 0.01, "no heatmap colours are visible"


def test_the_evaluation_page_shows_its_table_charts_and_verdicts(
    cli_evaluation: Path, tmp_path: Path
) -> None:
    chromium = _chromium()
    dom = _dom(chromium, cli_evaluation, CHECK_IMAGES + MEASURE_EVALUATION, tmp_path / "profile")
    assert _attribute(dom, "data-images") == "4/4"  # three score charts and the sanity curves
    assert _attribute(dom, "data-rows") == "3/3"  # three rows; the best of each score in bold
    assert int(_attribute(dom, "data-min-chart")) >= 400
    assert _attribute(dom, "data-verdicts") == "passes,fails"

    shot = tmp_path / "evaluation.png"
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}",
         f"--screenshot={shot}", "--window-size=1400,2000", cli_evaluation.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.std() > 10, "the screenshot is blank"
