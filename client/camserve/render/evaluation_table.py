"""An evaluation's ranked table as HTML: a row per method, best first by mean rank; per
score its mean ± std with the method's place, the best of each column highlighted, the
direction (↑ higher is better, ↓ lower) in the header; the sanity check's correlation
and verdict. Plain Python: notebooks show it (``Evaluation._repr_html_``) and the HTML
page embeds it, so both read the same."""

from __future__ import annotations

import math
from html import escape
from typing import Final

from camserve.evaluation import RANDOM, Evaluation

BEST_STYLE: Final = "background:#dcefd4;font-weight:600"
PASS_STYLE: Final = "color:#23702a"
FAIL_STYLE: Final = "color:#b00020;font-weight:600"
BASELINE_STYLE: Final = "color:#666;font-style:italic"
CELL_STYLE: Final = "padding:3px 10px;text-align:right;white-space:nowrap"


def number(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; ``–`` for NaN."""
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _score_cell(evaluation: Evaluation, method: str, metric: str) -> str:
    scores = evaluation.result(method).scores
    if metric not in scores:
        return f'<td style="{CELL_STYLE}">–</td>'
    summary = scores[metric]
    best = evaluation.best(metric) == method
    style = f"{CELL_STYLE};{BEST_STYLE}" if best else CELL_STYLE
    place = evaluation.rank(method, metric)
    text = number(summary.mean)
    if not math.isnan(summary.mean):
        text += f" ± {number(summary.std)} <small>#{place}</small>"
    title = f"{metric} of {method}: over {summary.count} of {evaluation.images} images"
    return f'<td class="score" style="{style}" title="{escape(title)}">{text}</td>'


def _sanity_cell(evaluation: Evaluation, method: str) -> str:
    check = evaluation.result(method).sanity
    if check is None:
        return f'<td style="{CELL_STYLE}">–</td>'
    style = PASS_STYLE if check.passed else FAIL_STYLE
    word = "passes" if check.passed else "fails"
    return (
        f'<td class="sanity" style="{CELL_STYLE};{style}" title="{escape(check.verdict)}">'
        f"{number(check.correlation, 2)} {word}</td>"
    )


def _header(evaluation: Evaluation, checked: bool) -> str:
    cells = ['<th style="padding:3px 10px">#</th>', '<th style="padding:3px 10px">method</th>']
    for info in evaluation.metrics.values():
        title = f"{info.direction}: {info.description}" if info.description else info.direction
        cells.append(
            f'<th style="{CELL_STYLE}" title="{escape(title)}">'
            f"{escape(info.name)} {info.arrow}</th>"
        )
    cells.append(f'<th style="{CELL_STYLE}" title="the place averaged over the scores">'
                 "mean rank</th>")  # fmt: skip
    if checked:
        threshold = number(evaluation.sanity_threshold, 2)
        cells.append(
            f'<th style="{CELL_STYLE}" title="Spearman correlation with the maps of the '
            f'model with random weights; passes below {threshold}">sanity ↓</th>'
        )
    cells.append(f'<th style="{CELL_STYLE}">ms</th>')
    return f"<thead><tr>{''.join(cells)}</tr></thead>"


def evaluation_table_html(evaluation: Evaluation) -> str:
    """The ranked table (see the module) as one ``<table>`` element."""
    checked = bool(evaluation.sanity)
    ranks = evaluation.mean_ranks()
    rows = []
    for place, method in enumerate(evaluation.ranking(), start=1):
        baseline = f' style="{BASELINE_STYLE}"' if method == RANDOM else ""
        cells = [
            f'<td style="{CELL_STYLE}">{place}</td>',
            f'<td class="method" style="padding:3px 10px">{escape(method)}'
            f"{' (baseline)' if method == RANDOM else ''}</td>",
        ]
        cells += [_score_cell(evaluation, method, metric) for metric in evaluation.metrics]
        cells.append(f'<td style="{CELL_STYLE}">{number(ranks[method], 2)}</td>')
        if checked:
            cells.append(_sanity_cell(evaluation, method))
        compute = evaluation.result(method).compute_ms
        cells.append(f'<td style="{CELL_STYLE}">{compute:.0f}</td>')
        rows.append(f"<tr{baseline}>{''.join(cells)}</tr>")
    return (
        '<table class="ranking" style="border-collapse:collapse;font-size:13px">'
        f"{_header(evaluation, checked)}<tbody>{''.join(rows)}</tbody></table>"
    )


__all__ = ["evaluation_table_html", "number"]
