"""``make demo``: start a real server, explain the sample images through the client SDK,
write overlays, captioned figures, an HTML report and an evaluation of the methods
(faithfulness scores and the sanity check, ranked) under ``out/``, and stop the server.
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
from camserve.cli import main as camserve_cli
from camserve.render import explanation_panels, for_display, overlay, panels_figure, to_pil

from . import SAMPLES_DIR

METHODS = ("gradcam", "gradcam++", "scorecam", "saliency", "integrated_gradients", "occlusion")
REPORT_METHODS = (*METHODS, "guided_backprop")
OPTIONS = {"occlusion": {"window": 12, "stride": 4}}
RAW_FAMILIES = ("gradient", "perturbation")  # drawn from their signed attributions


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
            families = {m.id: m.family for m in client.methods()}
            samples = sorted(SAMPLES_DIR.glob("*.png"))
            for path in samples:
                panels = []
                for method in METHODS:
                    ex = client.explain(
                        image=path,
                        model="demo",
                        method=method,
                        options=OPTIONS.get(method),
                        return_raw=families.get(method) in RAW_FAMILIES,
                    )
                    panels += explanation_panels(path, ex)
                    if method == "gradcam":
                        label = ex.scores[0].label
                        target = overlay(path, ex.heatmap)
                        out = args.out / f"{path.stem}_gradcam.png"
                        target.save(out)
                        written.append(out)
                figure = panels_figure(
                    panels,
                    title=f"{path.name}: predicted {label}",
                    image=for_display(to_pil(path), 320),
                )
                out = args.out / f"{path.stem}_methods.png"
                figure.save(out)
                written.append(out)
                print(f"{path.name}: predicted {label}")
            report = args.out / "report.html"
            code = camserve_cli(
                ["--server", address, "--timeout", "120", "report", str(SAMPLES_DIR),
                 "--model", "demo", "--methods", ",".join(REPORT_METHODS), "--out", str(report),
                 "--title", "camserve demo: the sample shapes"]
            )  # fmt: skip
            if code != 0:
                raise RuntimeError("the report failed")
            evaluation = args.out / "evaluation.html"
            code = camserve_cli(
                ["--server", address, "evaluate", str(SAMPLES_DIR), "--model", "demo",
                 "--methods", ",".join(REPORT_METHODS), "--sanity-check", "--out", str(evaluation),
                 "--title", "camserve demo: which method to trust"]
            )  # fmt: skip
            if code != 0:
                raise RuntimeError("the evaluation failed")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    print(f"wrote {len(written)} images under {args.out.resolve()}:")
    for path in written:
        print(f"  {path}")
    print(f"HTML report: {report.resolve()}")
    print(f"evaluation of the methods: {evaluation.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
