"""deploy/autoscale_sim.py: Kubernetes' HPA rule, step by step, and the simulation on the
manifests' own HPAs."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest
from deploy_checks import OVERLAYS, autoscale_sim, one, render

from camserve_server.config import Settings

sim = autoscale_sim
POD = sim.PodModel(throughput_rps=10.0, latency_s=1.0, startup_s=30.0)
HPA = sim.Hpa(
    min_replicas=2,
    max_replicas=20,
    metric="camserve_inflight_requests",
    target=5.0,
    up=sim.Rules(0, "Max", (sim.Policy("Percent", 100, 15), sim.Policy("Pods", 4, 15))),
    down=sim.Rules(300, "Min", (sim.Policy("Pods", 1, 60),)),
)


def test_desired_is_ceil_of_ready_times_ratio() -> None:
    scaler = sim.Autoscaler(HPA)
    assert scaler.metric_replicas(current=4, ready=4, metric=12.0) == 10  # ceil(4 * 12 / 5)
    assert scaler.metric_replicas(current=4, ready=4, metric=2.0) == 2
    assert scaler.metric_replicas(current=4, ready=4, metric=5.4) == 4  # within 10%


def test_pods_still_starting_damp_a_scale_up() -> None:
    scaler = sim.Autoscaler(HPA)
    # 4 ready at 10, 2 starting counted as idle: (40 + 0) / (5 * 6) = 1.33 -> ceil(8.0) = 8
    assert scaler.metric_replicas(current=6, ready=4, metric=10.0) == 8
    # 4 ready at 6, 2 starting: (24 + 0) / 30 = 0.8 < 1: no scale-up, and no scale-down
    assert scaler.metric_replicas(current=6, ready=4, metric=6.0) == 6


def test_scale_up_is_capped_by_the_largest_policy_per_period() -> None:
    scaler = sim.Autoscaler(HPA)
    assert scaler.step(0.0, current=3, ready=3, metric=50.0) == 7  # +4 pods beats +100%
    assert scaler.step(5.0, current=7, ready=3, metric=50.0) == 7  # same period: no more
    assert scaler.step(15.0, current=7, ready=7, metric=50.0) == 14  # next period: doubles
    assert scaler.step(30.0, current=14, ready=14, metric=50.0) == 20  # maxReplicas


def test_scale_down_waits_for_the_window_then_one_pod_a_minute() -> None:
    scaler = sim.Autoscaler(HPA)
    assert scaler.step(0.0, current=10, ready=10, metric=5.0) == 10
    replicas, t = 10, 15.0
    history = []
    while t <= 600:
        replicas = scaler.step(t, current=replicas, ready=replicas, metric=0.5)
        history.append((t, replicas))
        t += 15
    assert all(r == 10 for at, r in history if at < 300), "the window remembers 10"
    drops = [
        at for (at, r), (_, before) in zip(history[1:], history[:-1], strict=True) if r < before
    ]
    assert drops and all(b - a >= 60 for a, b in itertools.pairwise(drops))
    assert history[-1][1] >= HPA.min_replicas


def test_select_policy_min_takes_the_smallest_change() -> None:
    rules = sim.Rules(0, "Min", (sim.Policy("Percent", 100, 15), sim.Policy("Pods", 1, 15)))
    scaler = sim.Autoscaler(replace(HPA, up=rules))
    assert scaler.step(0.0, current=4, ready=4, metric=50.0) == 5


def test_a_steady_load_settles_at_the_target() -> None:
    load = 60.0  # 6 pods' worth; at 1 s per request, 60 in flight in all
    trace = sim.Trace((0.0, 1800.0), (load, load))
    samples = sim.simulate(trace, HPA, POD)
    last = samples[-1]
    assert 12 <= last.replicas <= 13  # 60 in flight / 5 per pod, within the 10% tolerance
    assert last.queued == 0 and last.delay_s == 0
    assert abs(last.metric - HPA.target) <= HPA.target * HPA.tolerance


def test_overload_queues_then_refuses_beyond_the_servers_queue_bound() -> None:
    pod = replace(POD, queue_size=50)
    capped = replace(HPA, max_replicas=2)
    samples = sim.simulate(sim.Trace((0.0, 120.0), (40.0, 40.0)), capped, pod)
    assert samples[-1].replicas == 2
    assert samples[-1].queued == pytest.approx(100.0)  # 2 pods x 50
    assert samples[-1].rejected_rps == pytest.approx(20.0)  # 40 arrive, 20 served
    summary = sim.summarise(samples, "capped", capped.target, slo_s=1.0)
    assert summary.rejected_fraction > 0.3 and summary.delay_max_s > 1.0


def test_more_headroom_costs_pods_and_saves_delay() -> None:
    trace = sim.default_trace(POD.throughput_rps)
    tight = sim.summarise(sim.simulate(trace, replace(HPA, target=9.0), POD), "9", 9.0, 1.0)
    loose = sim.summarise(sim.simulate(trace, replace(HPA, target=3.0), POD), "3", 3.0, 1.0)
    assert loose.mean_replicas > tight.mean_replicas
    assert loose.late_fraction <= tight.late_fraction


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_the_manifests_hpa_is_read_as_written(overlay: Path) -> None:
    objects = render(overlay)
    hpa = sim.hpa_from_objects(objects)
    spec = one(objects, "HorizontalPodAutoscaler", "camserve")["spec"]
    assert (hpa.min_replicas, hpa.max_replicas) == (spec["minReplicas"], spec["maxReplicas"])
    assert hpa.target == float(spec["metrics"][0]["pods"]["target"]["averageValue"])
    assert hpa.up.window_s == spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"]
    assert hpa.down.select == spec["behavior"]["scaleDown"]["selectPolicy"]
    assert len(hpa.down.policies) == len(spec["behavior"]["scaleDown"]["policies"])


def test_the_models_intervals_are_the_manifests() -> None:
    monitor = one(render(OVERLAYS[0]), "ServiceMonitor", "camserve")
    assert monitor["spec"]["endpoints"][0]["interval"] == f"{sim.SCRAPE_INTERVAL_S}s"
    assert sim.PodModel(1.0, 1.0).queue_size == Settings().queue_size


def test_the_command_line_on_an_overlay_with_bench_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text(
        "log line\n" + json.dumps({"gradcam": {"throughput_rps": 7.0, "p50_ms": 2250}})
    )
    trace = tmp_path / "trace.csv"
    trace.write_text("t_s,rps\n0,10\n600,60\n1200,60\n1800,5\n")
    cpu = next(p for p in OVERLAYS if p.name == "cpu")
    code = sim.main(["--manifest", str(cpu), "--bench-json", str(bench), "--trace", str(trace),
                     "--targets", "5,9", "--down-windows", "60"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "7 req/s at 2.25 s" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    variants = {r.split("|")[1].strip() for r in rows}
    assert {"manifest", "target 5", "target 9", "scale-down window 60 s"} <= variants
    assert "Kubernetes' default behavior" in variants


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--json"]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert summaries[0]["variant"] == "manifest"
    assert {"mean_replicas", "delay_p95_s", "late_fraction", "rejected_fraction"} <= set(
        summaries[0]
    )
