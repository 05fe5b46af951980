"""The images, both variants built from the project's one Dockerfile and the CPU one
started for real: it runs as the Kubernetes manifests run it (its user, read-only root
with a tmpfs /tmp, no capabilities, the published gRPC and metrics ports), passes its own
HEALTHCHECK, answers the CLI through the published port, serves /metrics, and drains on
SIGTERM. The GPU variant is built on the same base and inspected (running it needs a
GPU): torch is a CUDA build, the NVIDIA toolkit's variables ask for the GPUs, and it
shares every filesystem layer with the CPU image.

Both build on a Python base bootstrapped from Debian's archive
(deploy/docker/debian-base.sh), or on ``CAMSERVE_IMAGE_TEST_BASE`` when it names one.
Every image and layer lives in a private store, removed at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_checks import DEPLOY, DOCKERFILE, K8S, ROOT, exported_metric_names, render
from pod_as_container import limits, pod_run
from podman_cli import Container, Podman

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(3600)]

DOCKER = DEPLOY / "docker"
SAMPLES = ROOT / "server" / "camserve_server" / "demo" / "samples"
FREE_BYTES_NEEDED = 35 * 10**9  # a build's peak
BUILD_TIMEOUT_S = 1800
STARTUP_S = 300  # the startup probe's 5 s x 60


def missing() -> str | None:
    """Why the images cannot be built here, or None."""
    if shutil.which("podman") is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure_podman.sh")], check=False)
    if shutil.which("podman") is None:
        return "podman is missing and could not be installed (apt-get install podman runc)"
    if shutil.which("runc") is None:
        return "runc is missing (apt-get install runc)"
    if not os.environ.get("CAMSERVE_IMAGE_TEST_BASE") and shutil.which("mmdebstrap") is None:
        return "mmdebstrap is missing (apt-get install mmdebstrap) and no CAMSERVE_IMAGE_TEST_BASE"
    if shutil.disk_usage(ROOT).free < FREE_BYTES_NEEDED:
        return f"an image build needs {FREE_BYTES_NEEDED // 10**9} GB of free disk"
    return None


def ca_bundle() -> Path | None:
    """The host's CA bundle, which pip in the build trusts (mounted, never copied)."""
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(name) and Path(os.environ[name]).is_file():
            return Path(os.environ[name])
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default if default.is_file() else None


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    engine = Podman.configured_in(tmp_path_factory.mktemp("podman"))
    yield engine
    engine.remove_everything()


@pytest.fixture(scope="module")
def base(podman: Podman) -> str:
    """The Python base image both variants build on."""
    given = os.environ.get("CAMSERVE_IMAGE_TEST_BASE")
    if given:
        return given
    done = subprocess.run(
        ["bash", str(DOCKER / "debian-base.sh"), "camserve-image-test-base:bookworm"],
        capture_output=True, text=True, timeout=900, env=podman.env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return "localhost/camserve-image-test-base:bookworm"


@dataclass(frozen=True)
class Built:
    tag: str
    build_s: float


def build(podman: Podman, variant: str, base: str) -> Built:
    """Build the Dockerfile's ``variant`` as ``make image[-gpu]`` does, on ``base``."""
    tag = f"localhost/camserve-image-test:{variant}"
    args = ["build", "--format", "docker", "-f", str(DOCKERFILE), "-t", tag]
    args += ["--ignorefile", str(DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore"))]
    args += ["--build-arg", f"PYTHON_IMAGE={base}", "--build-arg", f"VARIANT={variant}"]
    bundle = ca_bundle()
    if bundle:
        args += ["-v", f"{bundle.parent}:{bundle.parent}:ro", "--build-arg", f"PIP_CERT={bundle}"]
    start = time.monotonic()
    podman(*args, str(ROOT), timeout=BUILD_TIMEOUT_S)
    seconds = time.monotonic() - start
    env = podman.inspect("image", tag)["Config"]["Env"]
    assert not [e for e in env if e.startswith(("PIP_CERT=", "REQUESTS_CA_BUNDLE="))], env
    return Built(tag, seconds)


def remove(podman: Podman, tag: str) -> None:
    podman("rmi", "--force", tag, timeout=300, check=False)
    podman("image", "prune", "--force", timeout=300, check=False)


@pytest.fixture(scope="module")
def cpu_image(podman: Podman, base: str) -> Iterator[Built]:
    built = build(podman, "cpu", base)
    yield built
    remove(podman, built.tag)


@pytest.fixture(scope="module")
def gpu_image(podman: Podman, base: str) -> Iterator[Built]:
    """Built after the CPU image when both tests run: with the same torch wheels it reuses
    the CPU build's layers, and only its variant's settings are new."""
    built = build(podman, "gpu", base)
    yield built
    remove(podman, built.tag)


def nvidia_env(podman: Podman, tag: str) -> dict[str, str]:
    """The image's NVIDIA container toolkit variables."""
    env = podman.inspect("image", tag)["Config"]["Env"]
    pairs = [e.partition("=") for e in env if e.startswith("NVIDIA_")]
    return {name: value for name, _, value in pairs}


def camserve(server: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI against ``server``."""
    return subprocess.run(
        [sys.executable, "-c", "import sys; from camserve.cli import main; sys.exit(main())",
         *args, "--server", server],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def sample_names(exposition: str) -> set[str]:
    """The ``camserve_*`` samples a /metrics page serves (creation stamps left out)."""
    names = {line.split("{")[0].split(" ")[0] for line in exposition.splitlines()}
    return {n for n in names if n.startswith("camserve_") and not n.endswith("_created")}


def report(**figures: float) -> None:
    print(" ".join(f"{name}={value:.1f}" for name, value in figures.items()))


def test_cpu_image_serves_as_the_manifests_run_it_and_drains(
    podman: Podman, cpu_image: Built, tmp_path: Path
) -> None:
    tag = cpu_image.tag
    assert nvidia_env(podman, tag) == {"NVIDIA_VISIBLE_DEVICES": "void"}, "no GPU"
    name = "camserve-image-test"
    try:
        run = pod_run(render(K8S / "overlays" / "cpu"), tmp_path)
        podman("run", "--detach", "--name", name, *run.args, tag)
        container = Container(podman, name)
        ready_s = container.wait_healthy(within_s=STARTUP_S)

        user = podman("exec", name, "id", "-u").stdout.strip()
        assert user == "10001"
        writes = podman("exec", name, "touch", "/opt/camserve/written", check=False)
        assert writes.returncode != 0 and "Read-only file system" in writes.stderr
        assert podman("exec", name, "touch", "/tmp/written", check=False).returncode == 0

        server = f"127.0.0.1:{run.host_ports['grpc']}"
        health = camserve(server, "health")
        assert health.returncode == 0 and "SERVING" in health.stdout, health
        models = camserve(server, "models")
        assert models.returncode == 0 and models.stdout.strip(), models
        out = tmp_path / "out"
        sample = SAMPLES / "00_circle.png"
        explained = camserve(server, "explain", "--out", str(out), str(sample))
        assert explained.returncode == 0, explained
        assert list(out.glob("*.png")), "an overlay per image"

        metrics_url = f"http://127.0.0.1:{run.host_ports['metrics']}/metrics"
        with urllib.request.urlopen(metrics_url, timeout=10) as answer:
            body = answer.read().decode()
        served = sample_names(body)
        assert "camserve_inflight_requests" in served, "the HPA's metric"
        assert served & exported_metric_names() == served

        code, stop_s = container.stop(run.grace_s)
        logs = container.logs()
        assert code == 0, logs
        assert "draining for up to" in logs, logs
        assert stop_s < run.grace_s, "stopped by SIGTERM's drain, not by SIGKILL"
        size_gb = podman.image_size(tag) / 1e9
        report(build_s=cpu_image.build_s, size_gb=size_gb, ready_s=ready_s, stop_s=stop_s)
    finally:
        podman("rm", "--force", name, check=False)


def test_gpu_image_builds_on_the_same_base_with_torchs_cuda(
    podman: Podman, gpu_image: Built
) -> None:
    """PyPI's torch wheels carry the CUDA runtime, so the GPU image needs no CUDA base;
    the NVIDIA container toolkit brings the driver when it runs."""
    tag = gpu_image.tag
    assert nvidia_env(podman, tag) == {
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
    }
    probe = podman(
        "run", "--rm", "--read-only", "--user", "10001:10001", *limits(),
        "--entrypoint", "python", tag,
        "-c", "import torch, camserve_server.app; print(torch.version.cuda)",
        timeout=300,
    )  # fmt: skip
    assert probe.stdout.strip().split(".")[0].isdigit(), "a CUDA build of torch: " + probe.stdout
    report(build_s=gpu_image.build_s, size_gb=podman.image_size(tag) / 1e9)


def test_the_variants_differ_only_in_the_nvidia_settings(
    podman: Podman, cpu_image: Built, gpu_image: Built
) -> None:
    """Same torch wheels (no TORCH_INDEX_URL), same layers: the GPU image costs no disk
    beside the CPU one, and they run the same way."""
    cpu, gpu = (podman.inspect("image", i.tag) for i in (cpu_image, gpu_image))
    assert cpu["RootFS"]["Layers"] == gpu["RootFS"]["Layers"]
    for config in (cpu["Config"], gpu["Config"]):
        config["Env"] = [e for e in config["Env"] if not e.startswith("NVIDIA_")]
    assert cpu["Config"] == gpu["Config"]
    assert cpu.get("Healthcheck") == gpu.get("Healthcheck")
