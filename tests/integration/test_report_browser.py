"""The HTML report opens in headless Chromium and shows every image, offline."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camserve import ExplainClient
from camserve.render import ReportEntry, html_report, overlay
from camserve_server.demo import SAMPLES_DIR
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
            overlays = {}
            for method in ("gradcam", "saliency"):
                ex = client.explain(image=path, model="demo", method=method)
                overlays[method] = overlay(path, ex.heatmap)
            predictions = [(s.label, s.probability) for s in ex.scores[:3]]
            entries.append(ReportEntry(path.stem, path, predictions, overlays))
    folder = tmp_path_factory.mktemp("report")
    page = folder / "report.html"
    page.write_text(html_report(entries, title="demo report"))
    return page, sum(1 + len(e.overlays) for e in entries)


def test_report_is_self_contained(report: tuple[Path, int]) -> None:
    text = report[0].read_text()
    assert not re.search(r"(src|href)=[\"']https?:", text)
    assert text.count("<img") == report[1]


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
