"""``Evaluate``'s messages made by hand, and a fake ``EvaluateService`` on a real port that
streams them: for tests of the SDK, the CLI and the HTML page without a model.

``report_proto`` builds a report the way ``evaluate.proto`` describes one: methods in
the request's order with ``"random"`` last, every score's ``MetricInfo``, means and
population stds over the images that have a value, NaN for the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
import numpy as np

from camserve.v1 import evaluate_pb2 as epb
from camserve.v1 import evaluate_pb2_grpc, explain_pb2_grpc
from camserve.v1 import explain_pb2 as pb

METRICS: dict[str, tuple[bool, str]] = {
    "deletion": (False, "area under the class probability as the most relevant pixels go"),
    "insertion": (True, "area under the class probability as the most relevant pixels return"),
    "drop_in_confidence": (False, "how much the probability drops on the map-masked image"),
    "pointing_game": (True, "share of maps whose maximum lies within a box"),
}
LAYERS = ("fc", "features.6", "features.3", "features.0")


def summary_proto(values: Sequence[float]) -> epb.ScoreSummary:
    """A ``ScoreSummary`` of per-image ``values``: mean and population std over the finite
    ones (NaN when there are none)."""
    array = np.asarray(values, dtype=np.float64)
    kept = array[~np.isnan(array)]
    mean = float(kept.mean()) if kept.size else float("nan")
    std = float(kept.std()) if kept.size else float("nan")
    return epb.ScoreSummary(mean=mean, std=std, values=array.tolist())


def sanity_proto(
    curve: Sequence[Sequence[float]], threshold: float, layers: Sequence[str] = LAYERS
) -> epb.SanityCheck:
    """A ``SanityCheck`` of per-stage, per-image correlations (the first stage nearest the
    output); ``layers_randomised`` is 2 per stage."""
    stages = [
        epb.SanityStage(
            layer=layers[k % len(layers)],
            layers_randomised=2 * (k + 1),
            correlation=summary_proto(v),
        )
        for k, v in enumerate(curve)
    ]
    final = stages[-1].correlation.mean
    return epb.SanityCheck(correlation=final, passed=bool(final < threshold), stages=stages)


def report_proto(
    *,
    model: str = "demo",
    layer: str = "features",
    targets: Sequence[int] = (0, 1, 2, 3),
    scores: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    sanity: Mapping[str, Sequence[Sequence[float]]] | None = None,
    metrics: Sequence[str] | None = None,
    threshold: float = 0.5,
    total_ms: float = 1234.0,
) -> epb.EvaluateReport:
    """A report: ``scores[method][metric]`` are per-image values (default: two methods and
    ``"random"``, seeded values for ``deletion`` and ``insertion``); ``sanity[method]`` a
    curve of per-image correlations per stage."""
    if scores is None:
        rng = np.random.default_rng(0)
        n = len(targets)
        ranges = {"gradcam": (0.1, 0.75), "saliency": (0.3, 0.5), "random": (0.5, 0.3)}
        scores = {
            method: {
                "deletion": rng.uniform(low - 0.1, low + 0.1, n).tolist(),
                "insertion": rng.uniform(high - 0.1, high + 0.1, n).tolist(),
            }
            for method, (low, high) in ranges.items()
        }
    names = list(metrics) if metrics is not None else list(dict.fromkeys(
        name for per_method in scores.values() for name in per_method
    ))  # fmt: skip
    report = epb.EvaluateReport(
        model=model,
        layer=layer,
        targets=list(targets),
        metrics=[
            epb.MetricInfo(
                name=n,
                higher_is_better=METRICS.get(n, (True, ""))[0],
                description=METRICS.get(n, (True, ""))[1],
            )
            for n in names
        ],
        pointing_tolerance=15,
        sanity_threshold=threshold,
        total_ms=total_ms,
    )
    report.faithfulness_options.steps = 20
    report.faithfulness_options.percentile = 80
    for method, per_metric in scores.items():
        entry = report.methods.add(method=method, compute_ms=100.0 + len(method))
        for name, values in per_metric.items():
            entry.scores[name].CopyFrom(summary_proto(values))
        if sanity and method in sanity:
            entry.sanity.CopyFrom(sanity_proto(sanity[method], threshold))
    return report


def progress_event(
    done: int, total: int, method: str = "gradcam", stage: str = "explain"
) -> epb.EvaluateEvent:
    """One progress event."""
    return epb.EvaluateEvent(
        progress=epb.EvaluateProgress(
            stage=stage, method=method, done=done, total=total, elapsed_ms=10.0 * done
        )
    )


@dataclass
class FakeEvaluateService(evaluate_pb2_grpc.EvaluateServiceServicer):
    """Streams ``steps`` progress events (``pause_s`` apart), then ``report`` (None: the
    stream ends without one), or fails with ``error``; records each request, the time it
    had left, and whether the caller cancelled it."""

    report: epb.EvaluateReport | None = field(default_factory=report_proto)
    steps: int = 4
    pause_s: float = 0.0
    error: tuple[grpc.StatusCode, str] | None = None
    requests: list[epb.EvaluateRequest] = field(default_factory=list)
    time_remaining: list[float | None] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    events_sent: int = 0

    def Evaluate(  # noqa: N802 (the generated servicer's name)
        self, request: epb.EvaluateRequest, context: grpc.ServicerContext
    ) -> Iterator[epb.EvaluateEvent]:
        self.requests.append(request)
        self.time_remaining.append(context.time_remaining())
        finished = threading.Event()
        context.add_callback(lambda: None if finished.is_set() else self.cancelled.set())
        if self.error is not None:
            finished.set()
            context.abort(*self.error)
        for done in range(1, self.steps + 1):
            if not context.is_active():
                return
            stage = "explain" if done <= self.steps // 2 or not request.sanity_check else "sanity"
            method = request.methods[done % len(request.methods)] if request.methods else ""
            self.events_sent += 1
            yield progress_event(done, self.steps, method, stage)
            time.sleep(self.pause_s)
        finished.set()
        if self.report is not None:
            yield epb.EvaluateEvent(report=self.report)


class FakeListings(explain_pb2_grpc.ExplainServiceServicer):
    """``ListModels`` and ``ListMethods`` of a server with the model ``demo``: what the CLI
    asks before an evaluation. ``occlusion`` takes a ``window``; ``feature_maps`` makes
    no map per class."""

    def ListModels(  # noqa: N802 (the generated servicer's name)
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        model = pb.ModelInfo(
            name="demo",
            layers=["features", "classifier"],
            default_layer="features",
            input_height=64,
            input_width=64,
            num_classes=4,
            has_labels=True,
            labels=["circle", "square", "triangle", "cross"],
            methods=["gradcam", "saliency", "occlusion", "feature_maps"],
        )
        return pb.ListModelsResponse(models=[model])

    def ListMethods(  # noqa: N802 (the generated servicer's name)
        self, request: pb.ListMethodsRequest, context: grpc.ServicerContext
    ) -> pb.ListMethodsResponse:
        window = pb.OptionInfo(name="window", default=pb.OptionValue(number=32))
        stride = pb.OptionInfo(name="stride", default=pb.OptionValue(number=16))
        return pb.ListMethodsResponse(
            methods=[
                pb.MethodInfo(id="gradcam", family="cam", uses_layer=True, uses_targets=True),
                pb.MethodInfo(id="saliency", family="gradient", uses_targets=True),
                pb.MethodInfo(
                    id="occlusion",
                    family="perturbation",
                    uses_targets=True,
                    options=[window, stride],
                ),
                pb.MethodInfo(id="feature_maps", family="activation", uses_layer=True),
            ]
        )


@contextmanager
def fake_evaluate_server(service: FakeEvaluateService) -> Iterator[str]:
    """``service``, and ``FakeListings`` beside it, on a real local port, for the duration;
    yields its ``host:port``."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    evaluate_pb2_grpc.add_EvaluateServiceServicer_to_server(service, server)
    # The type stubs mark every RPC abstract; at run time the base class answers
    # UNIMPLEMENTED for those FakeListings leaves out.
    listings = FakeListings()  # type: ignore[abstract]
    explain_pb2_grpc.add_ExplainServiceServicer_to_server(listings, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def report_event(report: epb.EvaluateReport) -> epb.EvaluateEvent:
    """The stream's last message."""
    return epb.EvaluateEvent(report=report)


__all__ = [
    "LAYERS",
    "METRICS",
    "FakeEvaluateService",
    "FakeListings",
    "fake_evaluate_server",
    "progress_event",
    "report_event",
    "report_proto",
    "sanity_proto",
    "summary_proto",
]
