"""``make demo``: start a real server, explain the sample images through the client SDK,
write the overlays under ``out/`` and stop the server.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from camserve import ExplainClient
from camserve.render import method_grid, overlay

from . import SAMPLES_DIR

METHODS = ("gradcam", "gradcam++", "scorecam", "saliency", "integrated_gradients", "occlusion")
OPTIONS = {"occlusion": {"window": 12, "stride": 4}}


def start_server(port: int) -> tuple[subprocess.Popen[str], str]:
    """Run ``camserve-server`` with the demo model; wait until it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "camserve_server", "--port", str(port), "--metrics-port", "-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    for line in process.stdout:
        print(f"  server: {line.rstrip()}")
        found = re.search(r"serving on (\S+):(\d+)", line)
        if found:
            return process, f"127.0.0.1:{found.group(2)}"
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError("the server did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Explain the demo samples and write overlays.")
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    process, address = start_server(args.port)
    written: list[Path] = []
    try:
        with ExplainClient(address, timeout=60.0) as client:
            client.health()
            samples = sorted(SAMPLES_DIR.glob("*.png"))
            for path in samples:
                maps = {}
                for method in METHODS:
                    ex = client.explain(
                        image=path, model="demo", method=method, options=OPTIONS.get(method)
                    )
                    maps[method] = ex.heatmap
                    if method == "gradcam":
                        label = ex.scores[0].label
                        target = overlay(path, ex.heatmap)
                        out = args.out / f"{path.stem}_gradcam.png"
                        target.save(out)
                        written.append(out)
                grid = method_grid(path, maps, title=f"{path.stem}: predicted {label}")
                out = args.out / f"{path.stem}_methods.png"
                grid.save(out)
                written.append(out)
                print(f"{path.name}: predicted {label}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    print(f"wrote {len(written)} images under {args.out.resolve()}:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
