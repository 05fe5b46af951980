"""Every Prometheus object the server exports, declared once, with low-cardinality labels.

Labels are model, method, code, tier, kind and score: never an image hash or a request id.
The standard gRPC server metrics are named and labelled as go-grpc-prometheus and
py-grpc-prometheus name them: ``grpc_type`` as go-grpc-prometheus writes it (``unary``),
``grpc_code`` as py-grpc-prometheus does (the status name: ``OK``, ``INVALID_ARGUMENT``).
Each server owns its registry, so several servers can run in one process (tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Faithfulness scores: areas and probabilities in [0, 1], probability changes in [-1, 1].
# With negative bounds the histogram exports no _sum (OpenMetrics): buckets and _count.
SCORE_BUCKETS = (
    -1, -0.5, -0.25, -0.1, -0.05, -0.01, 0,
    0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1,
)  # fmt: skip

# Names used by the deployment manifests and dashboards (deploy/ reads them from here).
REQUEST_LATENCY = "camserve_request_latency_seconds"
QUEUE_DEPTH = "camserve_queue_depth"
INFLIGHT = "camserve_inflight_requests"
BATCH_SIZE = "camserve_batch_size"
FAITHFULNESS_SCORE = "camserve_faithfulness_score"
GRPC_STARTED = "grpc_server_started_total"
GRPC_HANDLED = "grpc_server_handled_total"
GRPC_HANDLING = "grpc_server_handling_seconds"
GRPC_RECEIVED = "grpc_server_msg_received_total"
GRPC_SENT = "grpc_server_msg_sent_total"

# The labels of every standard gRPC metric (and grpc_code on GRPC_HANDLED); grpc_type is
# one of GRPC_TYPES' values.
RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
GRPC_TYPES = {  # (request streaming, response streaming): grpc_type
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}

# The model or method label of a request that names neither a served model nor a method;
# also the grpc_service and grpc_method labels of a call to a method no service has.
UNKNOWN = "unknown"


class RpcSeries:
    """The standard gRPC metrics of one served method, its label values bound once."""

    def __init__(self, metrics: Metrics, labels: tuple[str, str, str]) -> None:
        self.started = metrics.grpc_started.labels(*labels)
        self.received = metrics.grpc_received.labels(*labels)
        self.sent = metrics.grpc_sent.labels(*labels)
        self._handling = metrics.grpc_handling.labels(*labels)
        self._handled = metrics.grpc_handled
        self._labels = labels

    def handled(self, code: str, seconds: float) -> None:
        """Record one call's end: ``code`` is the status name the caller got."""
        self._handled.labels(*self._labels, code).inc()
        self._handling.observe(seconds)


class Metrics:
    """The server's metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._models: frozenset[str] = frozenset()
        self._methods: frozenset[str] = frozenset()
        self._rpc_series: dict[tuple[str, str, str], RpcSeries] = {}
        r = self.registry
        self.request_latency = Histogram(
            REQUEST_LATENCY,
            "Time from receiving a request to sending its reply.",
            ["model", "method", "code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "camserve_queue_wait_seconds",
            "Time a request waited in the batcher before compute.",
            ["model", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "camserve_compute_seconds",
            "Device time of one batch.",
            ["model", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            BATCH_SIZE,
            "Requests per executed batch.",
            ["model", "method"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        # Gauges are summed over live processes when several serve one port (processes.py).
        self.queue_depth = Gauge(
            QUEUE_DEPTH,
            "Requests waiting for a device worker.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.inflight = Gauge(
            INFLIGHT,
            "Requests being handled (queued or computing).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_hits = Counter(
            "camserve_cache_hits_total", "Activation cache hits.", ["tier"], registry=r
        )
        self.cache_misses = Counter(
            "camserve_cache_misses_total", "Activation cache misses.", ["tier"], registry=r
        )
        self.cache_errors = Counter(
            "camserve_cache_errors_total",
            "Activation cache failures (timeouts, connection errors, bad blobs, dropped writes).",
            ["tier", "kind"],
            registry=r,
        )
        self.device_memory = Gauge(
            "camserve_device_memory_bytes",
            "Device memory allocated by tensors.",
            ["device"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.batch_failures = Counter(
            "camserve_batch_failures_total",
            "Batches that raised and were split or failed.",
            ["model", "method", "kind"],
            registry=r,
        )

        self.faithfulness = Histogram(
            FAITHFULNESS_SCORE,
            "Faithfulness scores of the maps answered, by score (docs/methods.md).",
            ["model", "method", "score"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )

        self.set_images = Counter(
            "camserve_set_images_total",
            "Images sent to image sets, by outcome (indexed, skipped, failed).",
            ["model", "outcome"],
            registry=r,
        )
        self.set_query_latency = Histogram(
            "camserve_set_query_seconds",
            "Time of one image-set query or indexing batch, by kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        self.jobs = Counter(
            "camserve_jobs_total",
            'Optimisation jobs and evaluations (method "evaluate") by how they ended: '
            "ok, cancelled, error, cached, refused.",
            ["model", "method", "outcome"],
            registry=r,
        )
        self.jobs_running = Gauge(
            "camserve_jobs_running",
            "Optimisation jobs and evaluations admitted and not yet ended.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.job_step = Histogram(
            "camserve_job_step_seconds",
            "Device time of one optimisation step of a job.",
            ["model", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        self.grpc_started = Counter(
            GRPC_STARTED, "RPCs started on the server.", RPC_LABELS, registry=r
        )
        self.grpc_handled = Counter(
            GRPC_HANDLED,
            "RPCs completed on the server, by the status the caller got.",
            [*RPC_LABELS, "grpc_code"],
            registry=r,
        )
        self.grpc_handling = Histogram(
            GRPC_HANDLING,
            "Time from an RPC's start to its end, whatever its status.",
            RPC_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.grpc_received = Counter(
            GRPC_RECEIVED, "Messages received by the server.", RPC_LABELS, registry=r
        )
        self.grpc_sent = Counter(GRPC_SENT, "Messages sent by the server.", RPC_LABELS, registry=r)

    def rpc_series(self, grpc_type: str, service: str, method: str) -> RpcSeries:
        """The standard gRPC metrics of one method. The caller passes only names of served
        methods (or ``UNKNOWN``), never a path copied from a call: the series are kept."""
        labels = (grpc_type, service, method)
        series = self._rpc_series.get(labels)
        if series is None:
            series = self._rpc_series[labels] = RpcSeries(self, labels)
        return series

    def known_names(self, models: Iterable[str], methods: Iterable[str]) -> None:
        """Name the served models and the server's methods: the only values a request's
        model and method labels take (anything else is ``unknown``). Names copied from
        requests would let any caller add series without bound, each kept in memory and
        scraped for the life of the process."""
        self._models = frozenset(models)
        self._methods = frozenset(methods)

    def observe_request(self, model: str, method: str, code: str, seconds: float) -> None:
        """Record one request's latency under its final status code."""
        if not model and len(self._models) == 1:  # the sole model serves unnamed requests
            (model,) = self._models
        self.request_latency.labels(
            model if model in self._models else UNKNOWN,
            method if method in self._methods else UNKNOWN,
            code,
        ).observe(seconds)

    def observe_faithfulness(
        self, model: str, method: str, scores: Mapping[str, Iterable[float]]
    ) -> None:
        """Record every value of every score of one answer (one value per target)."""
        for score, values in scores.items():
            series = self.faithfulness.labels(model, method, score)
            for value in values:
                series.observe(value)

    # The cache's observer interface.
    def on_hit(self, tier: str) -> None:
        self.cache_hits.labels(tier).inc()

    def on_miss(self, tier: str) -> None:
        self.cache_misses.labels(tier).inc()

    def on_error(self, tier: str, kind: str) -> None:
        self.cache_errors.labels(tier, kind).inc()
