"""Every kustomize overlay, rendered and checked offline: Kubernetes' schemas (strict),
the custom resources against their CRDs, and agreement with the server's code (ports,
health service, drain time, metric names, settings) rather than with a second copy."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_checks import (
    ADAPTER,
    DEPLOY,
    K8S,
    NAMESPACE,
    OVERLAYS,
    ROOT,
    autoscale_sim,
    config_toml,
    exported_metric_names,
    metric_names_in,
    of_kind,
    one,
    pod_settings,
    render,
    server_container,
    sleep_seconds,
    walk,
    yaml_documents,
)

from camserve_server.app import SERVICE_NAME
from camserve_server.config import Settings, load_config_file
from camserve_server.runtime import metrics

# The oldest Kubernetes the manifests promise to work on, and the newest schemas known.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
CRDS = {
    (d["spec"]["group"], d["spec"]["names"]["kind"]): d
    for path in sorted((DEPLOY / "crds").glob("*.yaml"))
    for d in yaml_documents(path)
}
Objects = tuple[dict[str, Any], ...]


@pytest.fixture(params=OVERLAYS, ids=lambda p: p.name)
def overlay(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture
def objects(overlay: Path) -> Objects:
    return render(overlay)


@pytest.fixture
def settings(objects: Objects, tmp_path: Path) -> Settings:
    return pod_settings(objects, tmp_path)


def _strict(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields, as ``kubectl apply --validate=strict`` does."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if out.get("properties") and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if out.pop("x-kubernetes-int-or-string", False):
        out["type"] = ["integer", "string"]
    return out


def _crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    group, _, version = api_version.partition("/")
    crd = CRDS.get((group, kind))
    assert crd is not None, f"no CRD for {api_version} {kind} in deploy/crds"
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = _strict(served["schema"]["openAPIV3Schema"])
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


# ---------------------------------------------------------------- rendering and schemas


def test_the_overlays_are_there() -> None:
    assert {p.name for p in OVERLAYS} >= {"cpu", "gpu"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_matches_the_kubernetes_schemas(objects: Objects, version: str) -> None:
    checked = 0
    for obj in objects:
        group = obj["apiVersion"].partition("/")[0]
        if (group, obj["kind"]) in CRDS:
            continue  # the custom resources: next test
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {where}: {exc.message}")
        checked += 1
    assert checked >= 10


def test_custom_resources_match_their_crds(objects: Objects) -> None:
    custom = [o for o in objects if (o["apiVersion"].partition("/")[0], o["kind"]) in CRDS]
    assert any(o["kind"] == "ServiceMonitor" for o in custom)
    for obj in custom:
        errors = list(_crd_validator(obj["apiVersion"], obj["kind"]).iter_errors(obj))
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_crd_schema_catches_mistakes() -> None:
    """The CRD check is not a rubber stamp: a misspelt field and a bad value fail it."""
    monitor = one(render(OVERLAYS[0]), "ServiceMonitor", "camserve")
    validator = _crd_validator(monitor["apiVersion"], monitor["kind"])
    typo = json.loads(json.dumps(monitor))
    typo["spec"]["endpoints"][0]["intervall"] = "15s"
    bad = json.loads(json.dumps(monitor))
    bad["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert list(validator.iter_errors(typo)) and list(validator.iter_errors(bad))


def test_the_crds_are_valid_crds() -> None:
    assert CRDS
    for crd in CRDS.values():
        kubernetes_validate.validate(crd, KUBERNETES_VERSIONS[-1], strict=True)


def test_every_namespaced_object_is_in_the_camserve_namespace(objects: Objects) -> None:
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


def test_images_are_tagged_with_the_version(objects: Objects, overlay: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    flavour = "gpu" if "gpu" in overlay.name else "cpu"
    images = [
        c["image"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet")
        for c in o["spec"]["template"]["spec"]["containers"]
    ]
    for image in images:
        tag = image.rpartition(":")[2]
        assert ":" in image and tag != "latest" and re.search(r"\d", tag), image
    assert server_container(objects)["image"] == f"camserve:{version}-{flavour}"


# ---------------------------------------------------------------- the server's own values


def test_the_config_file_is_one_the_server_accepts(objects: Objects, tmp_path: Path) -> None:
    config = tmp_path / "camserve.toml"
    config.write_text(
        next(o for o in of_kind(objects, "ConfigMap") if "camserve.toml" in o.get("data", {}))[
            "data"
        ]["camserve.toml"]
    )
    server_table, _ = load_config_file(config)  # refuses unknown settings
    assert server_table


def test_the_pod_listens_on_every_interface(settings: Settings) -> None:
    assert settings.host == "0.0.0.0" and settings.metrics_host == "0.0.0.0"


def test_container_ports_are_the_servers(objects: Objects, settings: Settings) -> None:
    ports = {p["name"]: p["containerPort"] for p in server_container(objects)["ports"]}
    assert ports == {"grpc": settings.port, "metrics": settings.metrics_port}
    annotations = one(objects, "Deployment", "camserve")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/port"] == str(settings.metrics_port)


def test_probes_ask_the_health_service(objects: Objects, settings: Settings) -> None:
    container = server_container(objects)
    probes = {k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, probe in probes.items():
        if "grpc" in probe:
            # Kubernetes' gRPC probe speaks plaintext: TLS needs the exec health check.
            assert not settings.tls_enabled
            assert probe["grpc"]["port"] == settings.port
            service = probe["grpc"].get("service", "")
        else:
            command = probe["exec"]["command"]
            assert command[:3] == ["python", "-m", "camserve_server.healthcheck"]
            service = command[command.index("--service") + 1] if "--service" in command else ""
            assert probe["timeoutSeconds"] >= 3  # a Python process starting
        if kind == "livenessProbe":
            assert service in ("", SERVICE_NAME)
        else:
            assert service == SERVICE_NAME, f"{kind} waits for the ExplainService itself"


def test_tls_settings_point_at_mounted_secret_files(objects: Objects, settings: Settings) -> None:
    if not settings.tls_enabled:
        return
    container = server_container(objects)
    pod = one(objects, "Deployment", "camserve")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    for path in (settings.tls_cert, settings.tls_key, env["CAMSERVE_HEALTHCHECK_CA"]):
        assert path
        mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert "secret" in volume


def test_the_startup_probe_covers_model_warm_up(objects: Objects) -> None:
    probe = server_container(objects)["startupProbe"]
    budget = probe["periodSeconds"] * probe["failureThreshold"]
    assert budget >= 300, "loading and warming a large model takes minutes"


def test_termination_covers_pre_stop_and_the_drain(objects: Objects, settings: Settings) -> None:
    pod = one(objects, "Deployment", "camserve")["spec"]["template"]["spec"]
    container = server_container(objects)
    pause = sleep_seconds(container)
    assert pause >= 5, "endpoints and clients drop the pod before SIGTERM"
    assert pod["terminationGracePeriodSeconds"] >= pause + settings.grace_period_s + 1
    liveness = container["livenessProbe"]
    # A draining server answers NOT_SERVING; liveness must not kill it before it is done.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > settings.grace_period_s


def test_connections_are_recycled_so_new_pods_get_traffic(
    objects: Objects, settings: Settings
) -> None:
    assert "max_connection_age_s" in config_toml(objects)["server"]
    assert 0 < settings.max_connection_age_s <= 300


def test_resources_requested_and_limited(objects: Objects, overlay: Path) -> None:
    for workload in of_kind(objects, "Deployment") + of_kind(objects, "StatefulSet"):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
            assert "memory" in resources["limits"], container["name"]
    pod = one(objects, "Deployment", "camserve")["spec"]["template"]["spec"]
    limits = server_container(objects)["resources"]["limits"]
    if "gpu" in overlay.name:
        assert limits["nvidia.com/gpu"] == 1
        assert server_container(objects)["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert pod["nodeSelector"]
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    else:
        assert "nvidia.com/gpu" not in limits and "tolerations" not in pod


def test_pods_run_locked_down(objects: Objects) -> None:
    for workload in of_kind(objects, "Deployment") + of_kind(objects, "StatefulSet"):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]


def test_tokens_come_from_a_secret(objects: Objects) -> None:
    env = {e["name"]: e for e in server_container(objects)["env"]}
    assert "secretKeyRef" in env["CAMSERVE_AUTH_TOKENS"]["valueFrom"]


# ---------------------------------------------------------------- services and policies


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_services(objects: Objects, settings: Settings) -> None:
    pod_labels = one(objects, "Deployment", "camserve")["spec"]["template"]["metadata"]["labels"]
    grpc = one(objects, "Service", "camserve")
    headless = one(objects, "Service", "camserve-headless")
    scraped = one(objects, "Service", "camserve-metrics")
    for service in (grpc, headless, scraped):
        assert _selects(service["spec"]["selector"], pod_labels)
    for service in (grpc, headless):
        (port,) = service["spec"]["ports"]
        assert port["port"] == settings.port and port["targetPort"] == "grpc"
    assert headless["spec"]["clusterIP"] == "None"  # one DNS record per pod: round robin
    (metrics_port,) = scraped["spec"]["ports"]
    assert metrics_port["port"] == settings.metrics_port
    monitor = one(objects, "ServiceMonitor", "camserve")
    assert _selects(monitor["spec"]["selector"]["matchLabels"], scraped["metadata"]["labels"])
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [metrics_port["name"]]


def test_redis_is_a_bounded_lru_cache_the_server_points_at(
    objects: Objects, settings: Settings
) -> None:
    redis = one(objects, "StatefulSet", "camserve-redis")
    service = one(objects, "Service", "camserve-redis")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "allkeys-lru"
    maxmemory = args[args.index("--maxmemory") + 1]
    assert maxmemory.endswith("mb")
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    assert int(maxmemory[:-2]) <= 0.8 * float(limit[:-2]) * 1024
    assert settings.redis_url
    url = urlparse(settings.redis_url)
    assert url.hostname == service["metadata"]["name"]
    assert url.port == service["spec"]["ports"][0]["port"] == container["ports"][0]["containerPort"]
    assert _selects(service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])


def _ingress(objects: Objects, selecting: dict[str, str]) -> list[dict[str, Any]]:
    policies = [
        p
        for p in of_kind(objects, "NetworkPolicy")
        if p["spec"]["podSelector"] and _selects(p["spec"]["podSelector"]["matchLabels"], selecting)
    ]
    assert len(policies) == 1
    rules: list[dict[str, Any]] = policies[0]["spec"]["ingress"]
    return rules


def test_network_policies(objects: Objects, settings: Settings) -> None:
    deny = [p for p in of_kind(objects, "NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert deny and "ingress" not in deny[0]["spec"], "a default deny for the namespace"
    server_labels = one(objects, "Deployment", "camserve")["spec"]["template"]["metadata"]["labels"]
    by_port = {}
    for rule in _ingress(objects, server_labels):
        (port,) = rule["ports"]
        by_port[port["port"]] = rule["from"]
    assert set(by_port) == {settings.port, settings.metrics_port}
    (clients,) = by_port[settings.port]
    assert clients["podSelector"]["matchLabels"] == {"camserve.io/client": "true"}
    (prometheus,) = by_port[settings.metrics_port]
    assert prometheus["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "prometheus"
    assert prometheus["namespaceSelector"]["matchLabels"]
    redis = one(objects, "StatefulSet", "camserve-redis")
    (rule,) = _ingress(objects, redis["spec"]["template"]["metadata"]["labels"])
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}  # this namespace only
    assert _selects(source["podSelector"]["matchLabels"], server_labels)


# ---------------------------------------------------------------- autoscaling


def test_the_hpa_scales_on_a_load_metric_the_server_exports(objects: Objects) -> None:
    hpa = one(objects, "HorizontalPodAutoscaler", "camserve")
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "camserve"}  # fmt: skip
    (metric,) = spec["metrics"]
    assert metric["pods"]["metric"]["name"] in (metrics.INFLIGHT, metrics.QUEUE_DEPTH)
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert 2 <= spec["minReplicas"] < spec["maxReplicas"]
    up, down = spec["behavior"]["scaleUp"], spec["behavior"]["scaleDown"]
    assert up["stabilizationWindowSeconds"] < down["stabilizationWindowSeconds"]
    assert max(p["value"] for p in up["policies"] if p["type"] == "Pods") > max(
        p["value"] for p in down["policies"] if p["type"] == "Pods"
    )
    deployment = one(objects, "Deployment", "camserve")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"


def test_the_disruption_budget_covers_the_server(objects: Objects) -> None:
    pdb = one(objects, "PodDisruptionBudget", "camserve")
    labels = one(objects, "Deployment", "camserve")["spec"]["template"]["metadata"]["labels"]
    assert _selects(pdb["spec"]["selector"]["matchLabels"], labels)
    hpa = one(objects, "HorizontalPodAutoscaler", "camserve")
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


def test_the_adapter_serves_the_hpa_metric() -> None:
    (config_map,) = render(ADAPTER)
    assert config_map["metadata"]["namespace"] == "monitoring"
    rules = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    served = {r["name"]["as"]: r for r in rules}
    for overlay in OVERLAYS:
        hpa = one(render(overlay), "HorizontalPodAutoscaler", "camserve")
        name = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
        rule = served[name]
        assert re.fullmatch(rule["name"]["matches"], name)
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        window = re.search(r"\[(\d+)s\]", rule["metricsQuery"])
        assert window and int(window[1]) == autoscale_sim.METRIC_WINDOW_S


def test_every_metric_queried_is_one_the_server_exports() -> None:
    """The dashboard's queries, the adapter's rules and the HPAs' metrics name only series
    the server's registry really exports."""
    exported = exported_metric_names()
    assert {metrics.REQUEST_LATENCY + "_bucket", metrics.QUEUE_DEPTH, metrics.INFLIGHT} <= exported
    dashboard = json.loads((DEPLOY / "grafana" / "camserve-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    (config_map,) = render(ADAPTER)
    for rule in yaml.safe_load(config_map["data"]["config.yaml"])["rules"]:
        queries += [rule["seriesQuery"], rule["name"]["as"], rule["name"]["matches"]]
    for overlay in OVERLAYS:
        hpa = one(render(overlay), "HorizontalPodAutoscaler", "camserve")
        queries += [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]]
    named = set().union(*(metric_names_in(q) for q in queries))
    assert len(named) >= 8
    assert named <= exported, f"not exported by the server: {sorted(named - exported)}"


def test_the_dashboard_shows_what_operators_need() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "camserve-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    joined = "\n".join(exprs)
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate({metrics.REQUEST_LATENCY}" in (
            joined
        )
    assert re.search(rf"sum by \(method\) \(rate\({metrics.REQUEST_LATENCY}_count", joined)
    for name in (metrics.BATCH_SIZE, metrics.QUEUE_DEPTH, metrics.INFLIGHT,
                 "camserve_cache_hits_total", "camserve_cache_misses_total",
                 "camserve_device_memory_bytes"):  # fmt: skip
        assert name in joined, name
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert set(re.findall(r"\$(\w+)", joined)) - {"__rate_interval"} <= variables


def test_the_model_store_config_keeps_the_base_server_settings() -> None:
    base = tomllib.loads((K8S / "base" / "camserve.toml").read_text())
    store = K8S / "components" / "model-store" / "camserve.toml"
    assert tomllib.loads(store.read_text())["server"] == base["server"]
    _, models = load_config_file(store)
    assert models and all(m.weights and m.weights.startswith("/models/") for m in models), (
        "weights come from the models volume"
    )


def test_every_kustomization_is_checked() -> None:
    """A new overlay or component is rendered by these tests (through an overlay)."""
    folders = {p.parent for p in K8S.rglob("kustomization.yaml")}
    components = {f for f in folders if f.parent.name == "components"}
    used: set[Path] = set()
    for overlay in OVERLAYS:
        for value in walk(yaml_documents(overlay / "kustomization.yaml")):
            if isinstance(value, str) and "components/" in value:
                used.add((overlay / value).resolve())
    assert components <= used
    assert folders - components <= {*OVERLAYS, K8S / "base", ADAPTER}
