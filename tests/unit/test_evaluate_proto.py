"""evaluate.proto's wire shape, pinned: renumbering a field breaks every deployed client."""

from __future__ import annotations

import pytest

from camserve.v1 import evaluate_pb2 as epb

FIELD_NUMBERS: dict[str, dict[str, int]] = {
    "Box": {"x0": 1, "y0": 2, "x1": 3, "y1": 4},
    "ImageBoxes": {"boxes": 1},
    "MethodOptions": {"options": 1},
    "EvaluateRequest": {
        "model": 1,
        "methods": 2,
        "images": 3,
        "set": 4,
        "targets": 5,
        "layer": 6,
        "metrics": 7,
        "faithfulness_options": 8,
        "boxes": 9,
        "pointing_tolerance": 10,
        "sanity_check": 11,
        "sanity_stages": 12,
        "seed": 13,
        "include_random": 14,
        "method_options": 15,
    },
    "EvaluateProgress": {"stage": 1, "method": 2, "done": 3, "total": 4, "elapsed_ms": 5},
    "ScoreSummary": {"mean": 1, "std": 2, "values": 3},
    "SanityStage": {"layer": 1, "layers_randomised": 2, "correlation": 3},
    "SanityCheck": {"correlation": 1, "passed": 2, "stages": 3},
    "MethodEvaluation": {"method": 1, "scores": 2, "sanity": 3, "compute_ms": 4},
    "MetricInfo": {"name": 1, "higher_is_better": 2, "description": 3},
    "EvaluateReport": {
        "model": 1,
        "layer": 2,
        "targets": 3,
        "methods": 4,
        "metrics": 5,
        "faithfulness_options": 6,
        "pointing_tolerance": 7,
        "sanity_threshold": 8,
        "total_ms": 9,
    },
    "EvaluateEvent": {"progress": 1, "report": 2},
}


@pytest.mark.parametrize("message", sorted(FIELD_NUMBERS))
def test_field_numbers_are_pinned(message: str) -> None:
    descriptor = epb.DESCRIPTOR.message_types_by_name[message]
    assert {f.name: f.number for f in descriptor.fields} == FIELD_NUMBERS[message]


def test_every_message_is_pinned() -> None:
    assert set(epb.DESCRIPTOR.message_types_by_name) == set(FIELD_NUMBERS)


def test_evaluate_is_server_streaming() -> None:
    method = epb.DESCRIPTOR.services_by_name["EvaluateService"].methods_by_name["Evaluate"]
    assert method.input_type.name == "EvaluateRequest"
    assert method.output_type.name == "EvaluateEvent"
    assert method.server_streaming and not method.client_streaming
