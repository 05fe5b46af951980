"""An evaluation's charts (matplotlib, the ``plots`` extra): a bar per method for one score
with its spread, and the sanity check's curves.

Score bars stand in ranking order, best first: the mean, a ± std whisker, and each
image's value as a dot; the best bar is red, the random baseline grey. Sanity curves
show the Spearman correlation between each method's maps and those of the model with
its parameterised layers re-initialised from the output down, one line per method
(a band of ± std), from the original model (1 by definition) to every layer random,
with the threshold a method must fall below to pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np
from PIL import Image

from camserve.evaluation import RANDOM, Evaluation
from camserve.render import _mpl
from camserve.render.charts import BAR, TOP_BAR

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BASELINE_BAR: Final = "#9a9a9a"
DOT: Final = "#303030"
THRESHOLD_LINE: Final = "#b00020"
MAX_DOTS: Final = 400  # per-image dots drawn per bar, at most (evenly spaced)


def _label(method: str) -> str:
    return f"{method}\n(baseline)" if method == RANDOM else method


def score_bars_figure(
    evaluation: Evaluation, metric: str, *, width: int = 640, height: int = 380
) -> Figure:
    """One bar per method for ``metric`` (see the module); a method without a value for it
    gets an empty slot marked ``n/a``."""
    info = evaluation.metric(metric)
    order = evaluation.ranking(metric)
    best = evaluation.best(metric)
    figure = _mpl.new_figure(width, height, "the evaluation's charts")
    ax = figure.subplots()
    for x, method in enumerate(order):
        summary = evaluation.result(method).scores.get(metric)
        if summary is None or np.isnan(summary.mean):
            ax.annotate("n/a", (x, 0.0), ha="center", va="bottom", fontsize=8, color="#666")
            continue
        colour = TOP_BAR if method == best else BASELINE_BAR if method == RANDOM else BAR
        ax.bar(x, summary.mean, width=0.7, color=colour, alpha=0.85, zorder=2)
        ax.errorbar(x, summary.mean, yerr=summary.std, color="#202020", capsize=4,
                    linewidth=1, zorder=3)  # fmt: skip
        values = summary.values[~np.isnan(summary.values)]
        if values.size:
            values = values[np.linspace(0, values.size - 1, min(values.size, MAX_DOTS)).astype(int)]
            spread = np.linspace(-0.22, 0.22, values.size) if values.size > 1 else np.zeros(1)
            ax.scatter(x + spread, values, s=8, color=DOT, alpha=0.5, zorder=4, linewidths=0)
    ax.axhline(0.0, color="#555555", linewidth=0.8, zorder=1)
    ax.set_xticks(range(len(order)), [_label(m) for m in order], fontsize=8,
                  rotation=30 if len(order) > 5 else 0)  # fmt: skip
    ax.set_ylabel("mean ± std; dots: images", fontsize=9)
    ax.set_title(f"{metric} {info.arrow} ({info.direction})", fontsize=11)
    ax.grid(axis="y", color="#e4e4e4", zorder=0)
    ax.margins(x=0.04, y=0.1)
    return figure


def score_bars_chart(
    evaluation: Evaluation, metric: str, *, width: int = 640, height: int = 380
) -> Image.Image:
    """``score_bars_figure`` drawn as a ``width`` x ``height`` RGB image."""
    return _mpl.to_image(score_bars_figure(evaluation, metric, width=width, height=height))


def sanity_curves_figure(evaluation: Evaluation, *, width: int = 720, height: int = 360) -> Figure:
    """The sanity check's curves (see the module); ValueError when no method was checked."""
    curves = evaluation.sanity_curves
    if not curves:
        raise ValueError("no method of this evaluation ran the sanity check")
    passed = evaluation.sanity_passed
    figure = _mpl.new_figure(width, height, "the sanity check chart")
    ax = figure.subplots()
    ticks: dict[int, str] = {0: "original"}
    for method, stages in curves.items():
        xs = np.array([0] + [s.layers_randomised for s in stages], dtype=np.float64)
        means = np.array([1.0] + [s.mean for s in stages], dtype=np.float64)
        stds = np.array([0.0] + [s.std for s in stages], dtype=np.float64)
        verdict = "passes" if passed[method] else "fails"
        (line,) = ax.plot(xs, means, marker="o", markersize=4, linewidth=1.6,
                          label=f"{method} ({verdict})")  # fmt: skip
        ax.fill_between(xs, means - stds, means + stds, color=line.get_color(), alpha=0.12)
        for stage in stages:
            ticks.setdefault(stage.layers_randomised, stage.layer)
    threshold = evaluation.sanity_threshold
    ax.axhline(threshold, color=THRESHOLD_LINE, linestyle="--", linewidth=1.2,
               label=f"threshold {threshold:.2f}: passes below")  # fmt: skip
    ax.axhline(0.0, color="#555555", linewidth=0.8)
    positions = sorted(ticks)
    labels = [ticks[p] if p == 0 else f"{ticks[p]}\n({p})" for p in positions]
    ax.set_xticks(positions, labels, fontsize=8, rotation=30 if len(positions) > 6 else 0)
    ax.set_xlabel("re-initialised from the output down to (layers randomised)", fontsize=9)
    ax.set_ylabel("Spearman correlation with the original maps", fontsize=9)
    ax.set_ylim(min(-0.2, float(ax.get_ylim()[0])), 1.08)
    ax.grid(color="#e4e4e4")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("sanity check: model randomisation (cascading)", fontsize=11)
    return figure


def sanity_curves_chart(
    evaluation: Evaluation, *, width: int = 720, height: int = 360
) -> Image.Image:
    """``sanity_curves_figure`` drawn as a ``width`` x ``height`` RGB image."""
    return _mpl.to_image(sanity_curves_figure(evaluation, width=width, height=height))


__all__ = [
    "sanity_curves_chart",
    "sanity_curves_figure",
    "score_bars_chart",
    "score_bars_figure",
]
