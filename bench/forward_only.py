"""Forward-only methods served on eager torch and on onnxruntime, one request at a time.

The same requests go to the default server (the eager model) and to the server
that loads the model's ONNX export: Score-CAM and Ablation-CAM (heatmaps compared
between the two) and ``Embed`` (vectors compared). Occlusion, the fourth
forward-only method, has its own rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from camserve import tensors
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc

from .loadgen import build_request


@dataclass(frozen=True)
class Case:
    """One forward-only request kind: a method at a layer, or ``embed``."""

    name: str
    method: str
    layer: str = ""


def cases(scorecam_layer: str) -> list[Case]:
    return [
        Case(f"scorecam at {scorecam_layer}", "scorecam", scorecam_layer),
        Case("ablationcam at layer4", "ablationcam", "layer4"),
        Case("embed", "embed"),
    ]


def _answer(stub: Any, model: str, case: Case, image: bytes) -> np.ndarray:
    if case.method == "embed":
        reply = stub.Embed(pb.EmbedRequest(model=model, input=pb.ImageInput(encoded=image)))
        return tensors.from_proto(reply.vector, copy=True)
    request = build_request(model, case.method, image)
    request.layer = case.layer
    reply = stub.Explain(request, timeout=1800)
    return tensors.from_proto(reply.heatmaps[0].map, copy=True)


def served(
    address: str, model: str, images: Sequence[bytes], scorecam_layer: str
) -> dict[str, dict[str, Any]]:
    """Seconds per image of each case, and its answers (heatmaps or vectors)."""
    results: dict[str, dict[str, Any]] = {}
    with grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        for case in cases(scorecam_layer):
            _answer(stub, model, case, images[0])  # warm-up: sessions, heads
            answers = []
            started = time.perf_counter()
            for image in images[1:]:
                answers.append(_answer(stub, model, case, image))
            seconds = (time.perf_counter() - started) / max(1, len(images) - 1)
            results[case.name] = {"s_per_image": seconds, "answers": answers}
    return results


def compare(
    eager: dict[str, dict[str, Any]], onnx: dict[str, dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """Per case: both times, onnxruntime's speed-up and the largest answer difference."""
    rows = {}
    for name, reference in eager.items():
        other = onnx[name]
        diff = max(
            float(np.abs(a - b).max())
            for a, b in zip(other["answers"], reference["answers"], strict=True)
        )
        rows[name] = {
            "eager_s_per_image": reference["s_per_image"],
            "onnxruntime_s_per_image": other["s_per_image"],
            "onnxruntime_vs_eager": reference["s_per_image"] / other["s_per_image"],
            "max_abs_diff": diff,
        }
    return rows
