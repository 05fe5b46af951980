"""``Evaluation``, the report of ``evaluate``: read from its message, every score ranked in
its direction with NaN last, the sanity check's verdicts and curves, plain rows and JSON,
a short repr and a table in notebooks; a report that breaks the contract is refused."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from camserve._evaluate_replies import evaluation, event
from camserve.errors import InternalError
from camserve.evaluation import Evaluation, EvaluationProgress
from camserve.v1 import evaluate_pb2 as epb
from evaluation_reports import report_proto

NAN = math.nan


def _evaluation(**kwargs: Any) -> Evaluation:
    return evaluation(report_proto(**kwargs))


def _scored(scores: dict[str, dict[str, list[float]]]) -> Evaluation:
    """An evaluation of these per-image values (every list as long as the images)."""
    images = len(next(iter(next(iter(scores.values())).values())))
    return _evaluation(targets=tuple(range(images)), scores=scores)


def test_the_report_is_read_in_order_with_its_settings() -> None:
    ev = _evaluation(model="resnet", layer="layer4", targets=(3, 1, 2, 0))
    assert ev.model == "resnet" and ev.layer == "layer4"
    assert ev.targets == (3, 1, 2, 0) and ev.images == 4
    untargeted = report_proto(targets=(0, 1, 2))
    del untargeted.targets[:]
    assert evaluation(untargeted).images == 3  # counted by the values then
    assert ev.methods == ["gradcam", "saliency", "random"]
    assert list(ev.metrics) == ["deletion", "insertion"]
    assert ev.metrics["deletion"].higher_is_better is False
    assert ev.metrics["insertion"].arrow == "↑" and ev.metrics["deletion"].arrow == "↓"
    assert ev.faithfulness_steps == 20 and ev.faithfulness_percentile == 80
    assert ev.pointing_tolerance == 15 and ev.sanity_threshold == 0.5
    assert ev.total_ms == 1234.0
    assert ev.result("saliency").compute_ms == 108.0


def test_scores_are_means_and_the_summary_keeps_spread_and_values() -> None:
    ev = _scored(
        {
            "gradcam": {"deletion": [0.1, 0.3], "pointing_game": [1.0, NAN]},
            "random": {"deletion": [0.5, 0.7], "pointing_game": [0.0, NAN]},
        }
    )
    assert ev.scores["gradcam"]["deletion"] == pytest.approx(0.2)
    summary = ev.summary("gradcam", "deletion")
    assert summary.std == pytest.approx(0.1)  # population std
    assert summary.values.dtype == np.float64
    np.testing.assert_allclose(summary.values, [0.1, 0.3])
    pointing = ev.summary("gradcam", "pointing_game")
    assert pointing.mean == 1.0 and pointing.count == 1
    assert math.isnan(pointing.values[1])
    assert list(ev.result("gradcam").scores) == ["deletion", "pointing_game"]


def test_each_score_ranks_in_its_own_direction() -> None:
    ev = _scored(
        {
            "gradcam": {"deletion": [0.1], "insertion": [0.6]},
            "saliency": {"deletion": [0.3], "insertion": [0.9]},
            "random": {"deletion": [0.5], "insertion": [0.2]},
        }
    )
    assert ev.ranking("deletion") == ["gradcam", "saliency", "random"]  # lower is better
    assert ev.ranking("insertion") == ["saliency", "gradcam", "random"]  # higher is better
    assert ev.best("deletion") == "gradcam" and ev.best("insertion") == "saliency"
    assert ev.rank("saliency", "deletion") == 2
    assert ev.mean_ranks() == {"gradcam": 1.5, "saliency": 1.5, "random": 3.0}
    assert ev.ranking() == ["gradcam", "saliency", "random"]  # a tie keeps the request's order


@pytest.mark.parametrize("metric", ["deletion", "insertion"])
def test_nan_ranks_last_in_either_direction_and_ties_keep_order(metric: str) -> None:
    ev = _scored(
        {
            "gradcam": {metric: [NAN]},
            "saliency": {metric: [0.4]},
            "occlusion": {metric: [0.4]},
            "random": {metric: [NAN]},
        }
    )
    assert ev.ranking(metric) == ["saliency", "occlusion", "gradcam", "random"]
    assert ev.rank("occlusion", metric) == 1  # equal means share a place
    assert ev.rank("gradcam", metric) == ev.rank("random", metric) == 3
    all_nan = _scored({"gradcam": {metric: [NAN]}, "random": {metric: [NAN]}})
    assert all_nan.best(metric) is None


def test_a_missing_score_is_nan_in_scores_and_ranks_last() -> None:
    ev = _scored(
        {"gradcam": {"deletion": [0.4]}, "random": {"deletion": [0.5], "insertion": [0.1]}}
    )
    assert math.isnan(ev.scores["gradcam"]["insertion"])
    assert ev.ranking("insertion") == ["random", "gradcam"]
    with pytest.raises(KeyError, match="gradcam has no score 'insertion'"):
        ev.summary("gradcam", "insertion")


def test_unknown_names_raise_key_errors_that_list_the_known_ones() -> None:
    ev = _evaluation()
    with pytest.raises(KeyError, match=r"no method 'occlusion'.*'gradcam', 'saliency', 'random'"):
        ev.result("occlusion")
    with pytest.raises(KeyError, match=r"no score 'road_morf'.*'deletion', 'insertion'"):
        ev.ranking("road_morf")


def test_the_sanity_check_gives_final_correlations_curves_and_verdicts() -> None:
    ev = _evaluation(
        sanity={"gradcam": [[0.8, 0.6], [0.2, 0.0]], "saliency": [[0.95, 0.97], [0.9, 0.92]]},
        targets=(0, 1),
        threshold=0.5,
    )
    assert ev.sanity == pytest.approx({"gradcam": 0.1, "saliency": 0.91})
    assert ev.sanity_passed == {"gradcam": True, "saliency": False}
    assert "random" not in ev.sanity
    curve = ev.sanity_curves["gradcam"]
    assert [(s.layer, s.layers_randomised) for s in curve] == [("fc", 2), ("features.6", 4)]
    assert curve[0].mean == pytest.approx(0.7) and curve[0].std == pytest.approx(0.1)
    np.testing.assert_allclose(curve[1].values, [0.2, 0.0])
    failing = ev.result("saliency").sanity
    assert failing is not None
    assert failing.verdict == "fails: maps barely change when the weights are random"
    assert _evaluation().sanity == {} and _evaluation().sanity_curves == {}


def test_plain_rows_best_first_for_a_data_frame() -> None:
    ev = _evaluation(sanity={"gradcam": [[0.1] * 4]})
    rows = ev.table()
    assert [row["method"] for row in rows] == ev.ranking()
    first = rows[0]
    assert set(first) == {
        "method",
        "deletion",
        "deletion std",
        "insertion",
        "insertion std",
        "mean rank",
        "sanity",
        "sanity passed",
        "compute_ms",
    }
    assert first["deletion"] == ev.scores[first["method"]]["deletion"]
    by_method = {row["method"]: row for row in rows}
    assert by_method["gradcam"]["sanity passed"] is True
    assert by_method["random"]["sanity"] is None


def test_to_dict_is_strict_json_with_nan_as_null() -> None:
    ev = _scored(
        {"gradcam": {"pointing_game": [1.0, NAN]}, "random": {"pointing_game": [NAN, NAN]}}
    )
    text = json.dumps(ev.to_dict(), allow_nan=False)
    data = json.loads(text)
    assert data["methods"][0]["scores"]["pointing_game"]["values"] == [1.0, None]
    assert data["methods"][1]["scores"]["pointing_game"]["mean"] is None
    assert data["ranking"] == {"pointing_game": ["gradcam", "random"]}
    assert data["metrics"][0] == {
        "name": "pointing_game",
        "higher_is_better": True,
        "description": "share of maps whose maximum lies within a box",
    }


def test_repr_is_short_and_gives_the_ranking() -> None:
    ev = _evaluation(sanity={"gradcam": [[0.1] * 4]})
    text = repr(ev)
    assert len(text) < 400 and "array(" not in text
    assert "images=4, ranking=['gradcam', 'saliency', 'random']" in text
    assert "metrics=['deletion', 'insertion']" in text
    assert "sanity={'gradcam': 0.1}" in text
    assert "values=float64 (4,)" in repr(ev.summary("gradcam", "deletion"))


def test_a_notebook_shows_the_ranked_table() -> None:
    ev = _evaluation(sanity={"gradcam": [[0.1] * 4], "saliency": [[0.9] * 4]})
    html = ev._repr_html_()
    assert html.startswith("<table") and html.count("<tr") == 4
    assert "deletion ↓" in html and "insertion ↑" in html
    assert html.count("background:#dcefd4") == 2  # the best of each score
    assert "0.90 fails" in html and "0.10 passes" in html
    assert "random (baseline)" in html


def test_progress_events_are_read() -> None:
    message = epb.EvaluateEvent(
        progress=epb.EvaluateProgress(
            stage="sanity", method="gradcam", done=3, total=12, elapsed_ms=50.0
        )
    )
    assert event(message) == EvaluationProgress("sanity", "gradcam", 3, 12, 50.0)
    assert isinstance(event(epb.EvaluateEvent(report=report_proto())), Evaluation)


def test_a_report_that_breaks_the_contract_is_refused() -> None:
    report = report_proto()
    del report.metrics[1]  # insertion's MetricInfo
    with pytest.raises(InternalError, match="gradcam's score insertion without its MetricInfo"):
        evaluation(report)
    doubled = report_proto()
    doubled.methods.add(method="gradcam")
    with pytest.raises(InternalError, match="reported a method twice"):
        evaluation(doubled)
    with pytest.raises(InternalError, match="empty evaluation event"):
        event(epb.EvaluateEvent())
