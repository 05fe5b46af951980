"""``import camserve`` (and the CLI module) must not pull in torch, the server, or figures."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "torchvision", "camserve_server", "camserve.render", "sklearn")


def _modules_after(code: str) -> list[str]:
    script = (
        "import json, sys\n"
        f"{code}\n"
        "print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_import_camserve_loads_no_torch() -> None:
    modules = _modules_after(
        "import camserve\n"
        "from camserve import AsyncExplainClient, CamserveError, ExplainClient, Explanation"
    )
    assert "camserve.client" in modules
    assert _heavy(modules) == []
    assert "PIL" not in modules  # Pillow is imported only when an image needs encoding


def test_the_cli_module_loads_no_torch() -> None:
    modules = _modules_after("import camserve.cli")
    assert _heavy(modules) == []


def test_camserve_imports_with_torch_blocked() -> None:
    modules = _modules_after(
        "sys.modules['torch'] = None  # any 'import torch' now fails\n"
        "import camserve, camserve.cli\n"
        "from camserve import ExplainClient\n"
        "ExplainClient('127.0.0.1:1').close()"
    )
    assert "camserve.cli" in modules
