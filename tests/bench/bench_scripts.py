"""Running a benchmark script as a person would: from the repository root, in a fresh
Python, its JSON read from what it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_for_json(args: list[str], timeout_s: float) -> Any:
    """``python *args`` run from the repository root (it must succeed): the JSON it
    prints, from the first ``{`` on."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )
    return json.loads(done.stdout[done.stdout.index("{") :])
