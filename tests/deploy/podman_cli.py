"""Podman for the image test, with its own configuration files and image store in one
folder: every image and layer the test makes goes there, and removing the folder removes
them. Scripts run with ``Podman.env`` use the same store.

The settings suit machines without systemd or a unified cgroup tree: the ``runc``
runtime with the ``cgroupfs`` manager and file-based events, overlay storage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENGINE = """[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

STORAGE = """[storage]
driver = "overlay"
graphroot = "{root}/storage"
runroot = "{root}/run"
"""


@dataclass(frozen=True)
class Podman:
    """``podman`` configured by files under ``root``, its image store there too."""

    root: Path

    @classmethod
    def configured_in(cls, root: Path) -> Podman:
        (root / "containers.conf").write_text(ENGINE)
        (root / "storage.conf").write_text(STORAGE.format(root=root))
        return cls(root)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_CONF": str(self.root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.root / "storage.conf"),
        }

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *args],
            capture_output=True, text=True, timeout=timeout, check=False, env=self.env,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {done.returncode}\n{done.stderr}")
        return done

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self(kind, "inspect", name).stdout)
        return found[0]

    def image_size(self, tag: str) -> int:
        return int(self.inspect("image", tag)["Size"])

    def remove_everything(self) -> None:
        """Every container and image of this store, then the store itself."""
        self("system", "reset", "--force", timeout=600, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class Container:
    """A started container, by name."""

    podman: Podman
    name: str

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.podman.inspect("container", self.name)["State"]
        return state

    def logs(self) -> str:
        done = self.podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def wait_healthy(self, within_s: float) -> float:
        """Run the image's own HEALTHCHECK (podman's timers need systemd) until it passes;
        the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < within_s:
            if not self.state()["Running"]:
                raise AssertionError(f"the container stopped:\n{self.logs()}")
            if self.podman("healthcheck", "run", self.name, check=False).returncode == 0:
                return time.monotonic() - start
            time.sleep(2)
        raise AssertionError(f"not healthy within {within_s:.0f} s:\n{self.logs()}")

    def stop(self, grace_s: int) -> tuple[int, float]:
        """SIGTERM, SIGKILL after ``grace_s``; the exit code and the seconds it took."""
        start = time.monotonic()
        self.podman("stop", "--time", str(grace_s), self.name, timeout=grace_s + 60)
        return int(self.state()["ExitCode"]), time.monotonic() - start
