"""The ``podman run`` arguments that start the image as a rendered Deployment's server
container does: its user, read-only root, dropped capabilities, emptyDir volumes as
tmpfs, ConfigMap files mounted read-only, literal environment, and ports."""

from __future__ import annotations

import resource
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy_checks import one, server_container

CPU_THREADS = "2"  # OMP_NUM_THREADS from limits.cpu: the CPU overlay's 2 cores


@dataclass(frozen=True)
class PodRun:
    """What to pass to ``podman run``, and where the container's ports were published."""

    args: list[str]
    host_ports: dict[str, int]  # port name (grpc, metrics) -> port on 127.0.0.1
    grace_s: int  # terminationGracePeriodSeconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def limits() -> list[str]:
    """Open files at the host's hard limit (a container cannot be given more) and
    a process cap a non-root root can grant."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return ["--ulimit", f"nofile={hard}:{hard}", "--ulimit", "nproc=32768:32768"]


def security(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    pod_context = pod["securityContext"]
    context = container["securityContext"]
    assert pod_context["runAsNonRoot"] and context["readOnlyRootFilesystem"]
    args = ["--user", f"{pod_context['runAsUser']}:{pod_context['runAsGroup']}"]
    args += ["--read-only", "--read-only-tmpfs=false"]
    args += [f"--cap-drop={c}" for c in context["capabilities"]["drop"]]
    if context.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    return args


def volumes(
    objects: tuple[dict[str, Any], ...],
    pod: dict[str, Any],
    container: dict[str, Any],
    scratch: Path,
) -> list[str]:
    """emptyDir volumes become tmpfs; each ConfigMap key a read-only file."""
    by_name = {v["name"]: v for v in pod["volumes"]}
    args: list[str] = []
    for mount in container["volumeMounts"]:
        volume = by_name[mount["name"]]
        path = mount["mountPath"]
        if "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit", "1Gi").replace("Gi", "g").replace("Mi", "m")
            args += ["--tmpfs", f"{path}:rw,size={size},mode=1777"]
        elif "configMap" in volume:
            data = one(objects, "ConfigMap", volume["configMap"]["name"])["data"]
            for key, text in data.items():
                local = scratch / key
                local.write_text(standalone(key, text))
                args += ["-v", f"{local}:{path}/{key}:ro"]
        else:
            raise AssertionError(f"no translation for volume {volume}")
    return args


def standalone(key: str, text: str) -> str:
    """The config file without the cluster's Redis, which a lone container cannot reach."""
    if key != "camserve.toml":
        return text
    return "".join(line for line in text.splitlines(True) if not line.startswith("redis_url"))


def environment(container: dict[str, Any]) -> list[str]:
    """Literal values; OMP_NUM_THREADS from the CPU limit; optional Secrets left out (the
    pod starts without them too)."""
    args: list[str] = []
    for variable in container.get("env", []):
        if "value" in variable:
            args += ["-e", f"{variable['name']}={variable['value']}"]
        elif "resourceFieldRef" in variable["valueFrom"]:
            args += ["-e", f"{variable['name']}={CPU_THREADS}"]
        else:
            assert variable["valueFrom"]["secretKeyRef"]["optional"], variable
    return args


def pod_run(objects: tuple[dict[str, Any], ...], scratch: Path) -> PodRun:
    """Arguments for the rendered Deployment's server container (without the image)."""
    pod = one(objects, "Deployment", "camserve")["spec"]["template"]["spec"]
    container = server_container(objects)
    host_ports = {p["name"]: free_port() for p in container["ports"]}
    published = [
        arg
        for p in container["ports"]
        for arg in ("-p", f"127.0.0.1:{host_ports[p['name']]}:{p['containerPort']}")
    ]
    args = [
        *security(pod, container),
        *volumes(objects, pod, container, scratch),
        *environment(container),
        *limits(),
        *published,
    ]
    return PodRun(args, host_ports, int(pod["terminationGracePeriodSeconds"]))
