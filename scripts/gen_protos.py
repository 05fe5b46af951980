"""Generate the Python gRPC stubs and their type stubs from ``protos/``.

Every ``.proto`` under ``protos/`` is compiled with ``grpc_tools.protoc`` into
``client/`` (``camserve/v1/explain.proto`` becomes ``client/camserve/v1/
explain_pb2.py``, ``explain_pb2.pyi``, ``explain_pb2_grpc.py`` and
``explain_pb2_grpc.pyi``, importable as ``camserve.v1``). The ``.pyi`` files
come from mypy-protobuf's ``protoc-gen-mypy`` and ``protoc-gen-mypy_grpc``
plugins, found next to the running interpreter.

Usage::

    python scripts/gen_protos.py          # (re)write the generated files
    python scripts/gen_protos.py --check  # exit 1 if they are missing or stale
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
OUT_DIR = ROOT / "client"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
PLUGINS = ("protoc-gen-mypy", "protoc-gen-mypy_grpc")
TOOL_PACKAGES = ("grpcio-tools", "protobuf", "mypy-protobuf")


def proto_files() -> list[Path]:
    """The ``.proto`` files to compile, relative to ``protos/``, sorted."""
    return sorted(p.relative_to(PROTO_DIR) for p in PROTO_DIR.rglob("*.proto"))


def expected_outputs(protos: list[Path]) -> list[Path]:
    """The files protoc writes for ``protos``, relative to the output directory."""
    outputs: list[Path] = []
    for proto in protos:
        stem = proto.with_suffix("")
        outputs.extend(stem.parent / (stem.name + suffix) for suffix in GENERATED_SUFFIXES)
    return sorted(outputs)


def find_plugin(name: str) -> Path:
    """A protoc plugin installed next to this interpreter, else on ``PATH``."""
    bin_dir = Path(sys.executable).parent
    for candidate in (bin_dir / name, bin_dir / f"{name}.exe"):
        if candidate.is_file():
            return candidate
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"error: {name} not found next to {sys.executable} nor on PATH")
    return Path(found)


def generate(out_dir: Path) -> list[Path]:
    """Compile every ``.proto`` into ``out_dir``; the generated files, relative to it."""
    protos = proto_files()
    if not protos:
        raise SystemExit(f"error: no .proto file under {PROTO_DIR.relative_to(ROOT)}")
    import grpc_tools  # the well-known types ship inside grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out = str(out_dir)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR.relative_to(ROOT)}",
        f"-I{well_known}",
        *(f"--plugin={name}={find_plugin(name)}" for name in PLUGINS),
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(p) for p in protos),
    ]
    # Run from the repository root with relative proto paths, so that the
    # generated files name only ``camserve/v1/...`` and never a machine path.
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"error: protoc failed with exit status {result.returncode}")
    outputs = expected_outputs(protos)
    missing = [p for p in outputs if not (out_dir / p).is_file()]
    if missing:
        raise SystemExit(f"error: protoc did not write {', '.join(map(str, missing))}")
    return outputs


def _shown(path: Path) -> str:
    """``path`` relative to the repository root where it lies inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def stale_files(outputs: list[Path], fresh_dir: Path, committed_dir: Path = OUT_DIR) -> list[str]:
    """How the generated files in ``committed_dir`` differ from a fresh set in ``fresh_dir``.

    One line per file that is missing, differs in any byte, or looks generated
    (``*_pb2*.py[i]``) but comes from no ``.proto``.
    """
    problems: list[str] = []
    for rel in outputs:
        committed = committed_dir / rel
        if not committed.is_file():
            problems.append(f"missing: {_shown(committed)}")
        elif committed.read_bytes() != (fresh_dir / rel).read_bytes():
            problems.append(f"differs: {_shown(committed)}")
    expected = set(outputs)
    for suffix in GENERATED_SUFFIXES:
        for path in sorted(committed_dir.rglob(f"*{suffix}")):
            if path.relative_to(committed_dir) not in expected:
                problems.append(f"unexpected (no .proto generates it): {_shown(path)}")
    return problems


def tool_versions() -> str:
    """The versions of the generating tools, for a stale-stubs message."""
    versions = []
    for package in TOOL_PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    return ", ".join(versions)


def check() -> int:
    """Regenerate into a temporary directory and compare byte for byte."""
    with tempfile.TemporaryDirectory(prefix="camserve-protos-") as tmp:
        fresh = Path(tmp)
        outputs = generate(fresh)
        problems = stale_files(outputs, fresh)
    if problems:
        print("generated stubs are out of date with protos/:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        print(
            f"run `python scripts/gen_protos.py` (generator: {tool_versions()})",
            file=sys.stderr,
        )
        return 1
    print(f"generated stubs are up to date ({len(outputs)} files)")
    return 0


def write() -> int:
    """Regenerate the committed files in place."""
    outputs = generate(OUT_DIR)
    for rel in outputs:
        print(f"wrote {(OUT_DIR / rel).relative_to(ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write: exit 1 if the committed stubs differ from a fresh generation",
    )
    args = parser.parse_args(argv)
    return check() if args.check else write()


if __name__ == "__main__":
    sys.exit(main())
