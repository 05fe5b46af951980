"""Shared by tests/deploy: the repository's paths, rendering kustomizations, and the
settings a rendered pod really runs with (computed by the server's own parser)."""

from __future__ import annotations

import functools
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from camserve_server.config import Settings, parse_args

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
ADAPTER = K8S / "prometheus-adapter"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
VARIANTS = ("cpu", "gpu")  # its VARIANT build argument: the images `make image[-gpu]` builds
NAMESPACE = "camserve"

sys.path.insert(0, str(DEPLOY))
import autoscale_sim as autoscale_sim  # noqa: E402  (re-exported for the tests)


def kubectl() -> str:
    return autoscale_sim.kubectl()


@functools.cache
def render(folder: Path) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize folder``, as objects."""
    return tuple(autoscale_sim.load_objects(folder))


def one(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def of_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def server_container(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    containers = one(objects, "Deployment", "camserve")["spec"]["template"]["spec"]["containers"]
    found = [c for c in containers if c["name"] == "camserve"]
    assert len(found) == 1
    container: dict[str, Any] = found[0]
    return container


def pod_settings(objects: tuple[dict[str, Any], ...], scratch: Path) -> Settings:
    """The settings the server container would start with: its args, its literal
    environment and its config file (from the ConfigMap mounted where CAMSERVE_CONFIG
    points), read by ``camserve_server.config.parse_args``."""
    pod = one(objects, "Deployment", "camserve")["spec"]["template"]["spec"]
    container = server_container(objects)
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    config = env.get("CAMSERVE_CONFIG")
    if config:
        mount = next(
            m for m in container["volumeMounts"] if config.startswith(m["mountPath"] + "/")
        )
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        config_map = one(objects, "ConfigMap", volume["configMap"]["name"])
        key = config[len(mount["mountPath"]) + 1 :]
        local = scratch / key
        local.write_text(config_map["data"][key])
        env["CAMSERVE_CONFIG"] = str(local)
    return parse_args([*container.get("command", [])[1:], *container.get("args", [])], env=env)


def config_toml(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The server's config file as the ConfigMap carries it."""
    config_map = next(
        o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].startswith("camserve-")
    )
    return tomllib.loads(config_map["data"]["camserve.toml"])


def sleep_seconds(container: dict[str, Any]) -> float:
    """The preStop pause (an exec ``sleep N`` or the built-in sleep action), 0 without."""
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    if command[:1] == ["sleep"]:
        return float(command[1])
    return 0.0


def metric_names_in(text: str) -> set[str]:
    """Every ``camserve_*`` metric name a query mentions."""
    return set(re.findall(r"\bcamserve_[a-z_]*[a-z](?![\w.])", text))


def exported_metric_names() -> set[str]:
    """Every sample name the server's Prometheus registry can export."""
    from camserve_server.runtime.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum")}
        elif family.type == "counter":
            names |= {family.name + "_total"}
        else:
            names.add(family.name)
    return names


def walk(node: Any) -> Iterator[Any]:
    """Every value in a nested structure."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
