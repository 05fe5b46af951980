"""An evaluation as an HTML page in the report's style (``page.html.j2``): the ranked table
(``evaluation_table``) with each score's definition, a bar chart per score with its
spread, and, when the sanity check ran, its curves and each method's verdict.

Charts are PNG data URIs: the page is one self-contained file, nothing is fetched. It
needs the ``plots`` extra (jinja2 for the page, matplotlib for the charts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from camserve.evaluation import Evaluation
from camserve.render._mpl import require
from camserve.render._templates import template
from camserve.render.evaluation_charts import sanity_curves_chart, score_bars_chart
from camserve.render.evaluation_table import evaluation_table_html, number
from camserve.render.report import png_data_uri


def describe(evaluation: Evaluation) -> str:
    """One line: model, layer, images, methods, time."""
    parts = [f"model {evaluation.model}"]
    if evaluation.layer:
        parts.append(f"layer {evaluation.layer}")
    parts += [
        f"{evaluation.images} images",
        f"methods {', '.join(evaluation.methods)}",
        f"{evaluation.total_ms / 1000:.1f} s",
    ]
    return " · ".join(parts)


def settings_line(evaluation: Evaluation) -> str:
    """The server's settings, with their defaults filled in."""
    parts = []
    if evaluation.faithfulness_steps:
        parts.append(f"deletion and insertion in {evaluation.faithfulness_steps} steps")
    if evaluation.faithfulness_percentile:
        parts.append(f"ROAD at the {evaluation.faithfulness_percentile}th percentile")
    if any("pointing_game" in r.scores for r in evaluation.results):
        parts.append(f"pointing game within {evaluation.pointing_tolerance} px")
    if evaluation.sanity:
        parts.append(f"sanity check passes below {number(evaluation.sanity_threshold, 2)}")
    parts.append("each score's mean ± std over the images; #n its place")
    return "; ".join(parts)


def _chart(picture: Any, alt: str, caption: str) -> dict[str, Any]:
    return {
        "src": png_data_uri(picture),
        "width": picture.width,
        "height": picture.height,
        "alt": alt,
        "caption": caption,
    }


def _sanity(evaluation: Evaluation) -> dict[str, Any] | None:
    if not evaluation.sanity:
        return None
    picture = sanity_curves_chart(evaluation)
    shown = _chart(
        picture,
        "sanity check: correlation against layers randomised, one line per method",
        "Spearman correlation of each method's maps with those of the model whose "
        "parameterised layers are re-initialised from the output down",
    )
    verdicts = []
    for r in evaluation.results:
        if r.sanity is not None:
            verdicts.append(
                {
                    "method": r.method,
                    "correlation": number(r.sanity.correlation, 2),
                    "verdict": r.sanity.verdict,
                    "word": "passes" if r.sanity.passed else "fails",
                }
            )
    return shown | {"verdicts": verdicts}


def evaluation_page(
    evaluation: Evaluation, *, title: str | None = None, summary: str | None = None
) -> str:
    """The page (see the module); ``title`` and ``summary`` default to the model's name
    and ``describe(evaluation)``."""
    require("the evaluation report")
    page_template = template("evaluation.html.j2")
    metrics = [
        {
            "name": info.name,
            "arrow": info.arrow,
            "direction": info.direction,
            "description": info.description,
        }
        for info in evaluation.metrics.values()
    ]
    charts = [
        _chart(
            score_bars_chart(evaluation, name),
            f"{name}: a bar per method, best first",
            f"{name} {info.arrow}: {info.description or info.direction}",
        )
        for name, info in evaluation.metrics.items()
    ]
    page: str = page_template.render(
        title=title or f"camserve evaluation: {evaluation.model}",
        summary=describe(evaluation) if summary is None else summary,
        table=evaluation_table_html(evaluation),
        metrics=metrics,
        settings=settings_line(evaluation),
        charts=charts,
        sanity=_sanity(evaluation),
    )
    return page


def write_evaluation_report(
    path: Path, evaluation: Evaluation, *, title: str | None = None, summary: str | None = None
) -> Path:
    """Write ``evaluation_page`` to ``path`` (its folder is created)."""
    page = evaluation_page(evaluation, title=title, summary=summary)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["describe", "evaluation_page", "settings_line", "write_evaluation_report"]
