"""An evaluation as an HTML page in the report's style (a ranked table with the best of each
score highlighted and each score's definition, a bar chart per score, the sanity curves
and verdicts; self-contained and escaped), its charts, and its text for the terminal."""

from __future__ import annotations

import base64
import io
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from camserve._evaluate_replies import evaluation
from camserve._evaluate_text import evaluation_text
from camserve.evaluation import Evaluation
from camserve.render.evaluation_charts import sanity_curves_chart, score_bars_chart
from camserve.render.evaluation_report import evaluation_page, write_evaluation_report
from evaluation_reports import report_proto

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

NAN = math.nan
SANITY = {"gradcam": [[0.7, 0.5], [0.2, 0.0]], "saliency": [[0.97, 0.95], [0.9, 0.92]]}


class _Page(HTMLParser):
    """The ``<img>`` sources, the ids and the text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.ids: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.sources.append(found.get("src") or "")
        if found.get("id"):
            self.ids.append(found["id"] or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def _picture(source: str) -> Image.Image:
    kind, _, data = source.partition(";base64,")
    assert kind == "data:image/png"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def _evaluation(sanity: bool = True) -> Evaluation:
    scores = {
        "gradcam": {"deletion": [0.1, 0.2], "insertion": [0.8, 0.7], "pointing_game": [1.0, NAN]},
        "saliency": {"deletion": [0.3, 0.3], "insertion": [0.5, 0.4], "pointing_game": [0.0, NAN]},
        "random": {"deletion": [0.5, 0.6], "insertion": [0.2, 0.3], "pointing_game": [0.0, NAN]},
    }
    return evaluation(
        report_proto(targets=(0, 1), scores=scores, sanity=SANITY if sanity else None)
    )


def test_the_page_holds_the_ranked_table_charts_definitions_and_verdicts() -> None:
    page = evaluation_page(_evaluation())
    parsed = _parse(page)
    assert parsed.ids[:4] == ["top", "ranking", "scores", "sanity"]
    assert len(parsed.sources) == 3 + 1  # a chart per score, and the sanity curves
    for source in parsed.sources:
        assert _picture(source).width >= 500
    assert page.count('<table class="ranking"') == 1
    assert page.count("background:#dcefd4") == 3  # the best of each score
    assert "deletion ↓" in page and "insertion ↑" in page and "pointing_game ↑" in page
    text = " ".join("".join(parsed.text).split())
    assert "lower is better: area under the class probability" in text
    assert "saliency 0.91: fails: maps barely change when the weights are random" in text
    assert "gradcam 0.10: passes" in text
    assert "pointing game within 15 px" in text and "passes below 0.50" in text
    assert "<title>camserve evaluation: demo</title>" in page
    lowered = page.lower()
    for absent in ("http://", "https://", "<link", "<script"):
        assert absent not in lowered
    assert "grid-template-columns: repeat(auto-fill" in page  # the report's style


def test_without_the_sanity_check_the_page_has_no_sanity_section() -> None:
    page = evaluation_page(_evaluation(sanity=False), title="t", summary="s")
    parsed = _parse(page)
    assert "sanity" not in parsed.ids and len(parsed.sources) == 3
    assert "sanity ↓" not in page and '<p class="summary">s</p>' in page


def test_names_are_escaped() -> None:
    report = report_proto(
        targets=(0,),
        scores={"<b>cam</b>": {"x&y": [0.5]}},
        sanity={"<b>cam</b>": [[0.1]]},
    )
    page = evaluation_page(evaluation(report), title="<i>t</i>")
    assert "<b>cam</b>" not in page and "&lt;b&gt;cam&lt;/b&gt;" in page
    assert "x&amp;y" in page and "<title>&lt;i&gt;t&lt;/i&gt;</title>" in page


def test_write_evaluation_report_makes_its_folder(tmp_path: Path) -> None:
    target = write_evaluation_report(tmp_path / "out" / "eval.html", _evaluation())
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert target.stat().st_size < 400_000


def test_charts_are_drawn_at_their_size_and_the_curves_need_a_check() -> None:
    ev = _evaluation()
    assert score_bars_chart(ev, "pointing_game", width=400, height=240).size == (400, 240)
    assert sanity_curves_chart(ev).size == (720, 360)
    nan_only = evaluation(report_proto(targets=(0,), scores={"random": {"deletion": [NAN]}}))
    assert score_bars_chart(nan_only, "deletion").size == (640, 380)
    with pytest.raises(ValueError, match="no method of this evaluation ran the sanity check"):
        sanity_curves_chart(_evaluation(sanity=False))


def test_without_jinja2_the_page_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "jinja2", None)
    with pytest.raises(ImportError, match=r"pip install 'camserve\[plots\]'"):
        evaluation_page(_evaluation())


def test_the_text_ranks_each_score_and_gives_the_verdicts() -> None:
    text = evaluation_text(_evaluation())
    lines = text.splitlines()
    assert (
        lines[0] == "model demo, layer features: 2 images, 2 methods and the random baseline, 1.2 s"
    )
    deletion = lines.index(next(line for line in lines if line.startswith("deletion ↓")))
    assert lines[deletion + 1 : deletion + 4] == [
        "   1. gradcam   0.150 ± 0.050",
        "   2. saliency  0.300 ± 0.000",
        "   3. random    0.550 ± 0.050  (baseline)",
    ]
    assert "   2. saliency  0.000 ± 0.000" in lines  # the pointing game: a tie shares a place
    assert "   2. random    0.000 ± 0.000  (baseline)" in lines
    assert "overall, by mean rank: gradcam (1.00), saliency (2.00), random (2.67)" in lines
    assert "  saliency   0.91  fails: maps barely change when the weights are random" in lines
    below = evaluation(
        report_proto(
            targets=(0,), scores={"gradcam": {"deletion": [0.9]}, "random": {"deletion": [0.2]}}
        )
    )
    assert "  below the random baseline: gradcam" in evaluation_text(below).splitlines()
