"""An evaluation as text for the terminal: per score the methods best first with mean ±
std and the direction, the methods that rank below the random baseline, the overall
order by mean rank, and each checked method's sanity verdict."""

from __future__ import annotations

import math

from camserve.evaluation import RANDOM, Evaluation


def _value(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def headline(evaluation: Evaluation) -> str:
    """``model M, layer L: N images, K methods and the random baseline, T s``."""
    methods = [m for m in evaluation.methods if m != RANDOM]
    baseline = " and the random baseline" if RANDOM in evaluation.methods else ""
    where = f"model {evaluation.model}" + (
        f", layer {evaluation.layer}" if evaluation.layer else ""
    )
    return (
        f"{where}: {evaluation.images} images, {len(methods)} methods{baseline}, "
        f"{evaluation.total_ms / 1000:.1f} s"
    )


def score_lines(evaluation: Evaluation) -> list[str]:
    """Per score: its name, arrow and meaning, then a line per method, best first."""
    width = max((len(m) for m in evaluation.methods), default=0)
    lines = []
    for name, info in evaluation.metrics.items():
        meaning = f": {info.description}" if info.description else ""
        lines.append(f"{name} {info.arrow} ({info.direction}){meaning}")
        order = evaluation.ranking(name)
        for method in order:
            summary = evaluation.result(method).scores.get(name)
            value = "n/a" if summary is None else _value(summary.mean, summary.std)
            place = evaluation.rank(method, name)
            note = "  (baseline)" if method == RANDOM else ""
            lines.append(f"  {place:>2}. {method:<{width}}  {value}{note}")
        if RANDOM in order:
            below = [m for m in order if evaluation.rank(m, name) > evaluation.rank(RANDOM, name)]
            if below:
                lines.append(f"  below the random baseline: {', '.join(below)}")
    return lines


def overall_line(evaluation: Evaluation) -> str:
    """The methods by mean rank over every score."""
    ranks = evaluation.mean_ranks()
    order = ", ".join(f"{m} ({ranks[m]:.2f})" for m in evaluation.ranking())
    return f"overall, by mean rank: {order}"


def sanity_lines(evaluation: Evaluation) -> list[str]:
    """The sanity check's threshold, then a verdict per checked method (none: no lines)."""
    checked = [r for r in evaluation.results if r.sanity is not None]
    if not checked:
        return []
    width = max(len(r.method) for r in checked)
    lines = [
        "sanity check (Spearman correlation with the maps of the model with its weights "
        f"re-initialised; passes below {evaluation.sanity_threshold:.2f}):"
    ]
    for r in checked:
        assert r.sanity is not None
        lines.append(f"  {r.method:<{width}}  {r.sanity.correlation:5.2f}  {r.sanity.verdict}")
    return lines


def evaluation_text(evaluation: Evaluation) -> str:
    """The whole summary, one block after another."""
    blocks = [[headline(evaluation)], score_lines(evaluation)]
    if evaluation.metrics:
        blocks.append([overall_line(evaluation)])
    blocks.append(sanity_lines(evaluation))
    return "\n".join("\n".join(block) for block in blocks if block)


__all__ = ["evaluation_text", "headline", "overall_line", "sanity_lines", "score_lines"]
