"""``python -m bench.evaluation``: which method should one trust for the demo model?

Starts a real server in this process (the demo model alone), and asks ``Evaluate`` for
every method of the demo model that makes a map per class, on ``--images`` images of
the demo's data set (a seed the model was not trained on) with their objects' boxes,
with random maps as a baseline and the cascading sanity check. Prints one markdown
table (mean and spread of every score, the pointing game, the sanity correlation and
verdict) and the evaluation's time. docs/methods.md, "Faithfulness", quotes it.

``--quick`` evaluates two methods on four images (the test suite uses it to check the
harness runs; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from camserve.v1 import evaluate_pb2 as epb
from camserve.v1 import evaluate_pb2_grpc, explain_pb2_grpc
from camserve.v1 import explain_pb2 as pb
from camserve_server.config import Settings, load_config_file
from camserve_server.demo import LABELS_PATH, MEAN, STD, WEIGHTS_PATH
from camserve_server.demo.data import make_dataset
from camserve_server.inprocess import ServerThread

SEED = 2026  # not a seed of the training data
CONFIG = """
[[models]]
name = "demo"
arch = "camserve_server.demo.model:build_demo_model"
weights = "{weights}"
labels = "{labels}"
input_size = [64, 64]
mean = {mean}
std = {std}
"""


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def request(methods: list[str], images: int, stages: int, tolerance: int) -> epb.EvaluateRequest:
    """The evaluation: demo images with their boxes (exclusive ends on the wire)."""
    samples = make_dataset(images, SEED)
    return epb.EvaluateRequest(
        model="demo",
        methods=methods,
        images=[pb.ImageInput(encoded=_png(s.image)) for s in samples],
        boxes=[
            epb.ImageBoxes(
                boxes=[epb.Box(x0=s.box[0], y0=s.box[1], x1=s.box[2] + 1, y1=s.box[3] + 1)]
            )
            for s in samples
        ],
        pointing_tolerance=tolerance,
        sanity_check=True,
        sanity_stages=stages,
        include_random=True,
        seed=0,
    )


def table(report: epb.EvaluateReport) -> str:
    """The report as markdown: one row per method, ``mean ± std`` per score."""
    names = [m.name for m in report.metrics]
    arrows = {m.name: "↑" if m.higher_is_better else "↓" for m in report.metrics}
    head = ["method", *(f"{name} {arrows[name]}" for name in names), "sanity ↓", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in report.methods:
        cells = [f"`{method.method}`"]
        for name in names:
            score = method.scores[name]
            cells.append(f"{score.mean:.3f} ± {score.std:.3f}")
        if method.HasField("sanity"):
            sanity = method.sanity
            cells += [f"{sanity.correlation:.2f}", "passes" if sanity.passed else "**fails**"]
        else:
            cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curves(report: epb.EvaluateReport) -> str:
    """Each method's mean correlation per stage of the cascade, from the output down."""
    lines = []
    for method in report.methods:
        if method.HasField("sanity"):
            stages = ", ".join(
                f"{s.layers_randomised}: {s.correlation.mean:.2f}" for s in method.sanity.stages
            )
            lines.append(f"- `{method.method}` (layers re-initialised: correlation) {stages}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--stages", type=int, default=5)
    parser.add_argument(
        "--tolerance",
        type=int,
        default=4,
        help="pointing-game tolerance in pixels (default 4: the usual 15 at 224 px, scaled "
        "to the demo's 64 px inputs)",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    config = folder / "demo.toml"
    config.write_text(
        CONFIG.format(
            weights=WEIGHTS_PATH.as_posix(),
            labels=LABELS_PATH.as_posix(),
            mean=list(MEAN),
            std=list(STD),
        )
    )
    _, models = load_config_file(config)
    server = ServerThread(Settings(host="127.0.0.1", port=0, metrics_port=-1, models=models))
    port = server.start()
    try:
        channel = grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        listing = explain_pb2_grpc.ExplainServiceStub(channel)
        methods_info = listing.ListMethods(pb.ListMethodsRequest(), timeout=30).methods
        served = set(listing.ListModels(pb.ListModelsRequest(), timeout=30).models[0].methods)
        methods = [m.id for m in methods_info if m.uses_targets and m.id in served]
        images = args.images
        if args.quick:
            methods, images = ["gradcam", "saliency"], 4
        started = time.perf_counter()
        stream = evaluate_pb2_grpc.EvaluateServiceStub(channel).Evaluate(
            request(methods, images, args.stages, args.tolerance), timeout=3600
        )
        report = next(e.report for e in stream if e.WhichOneof("event") == "report")
        seconds = time.perf_counter() - started
    finally:
        server.stop()
    maps = images * len(methods) * (1 + len(report.methods[0].sanity.stages))
    if args.json:
        figures = {
            m.method: {
                **{name: s.mean for name, s in m.scores.items()},
                **({"sanity": m.sanity.correlation} if m.HasField("sanity") else {}),
                **({"passed": m.sanity.passed} if m.HasField("sanity") else {}),
            }
            for m in report.methods
        }
        print(json.dumps({"images": images, "maps": maps, "seconds": seconds, **figures}))
        return
    print(table(report))
    print()
    print(curves(report))
    print()
    print(f"{images} images, {len(methods)} methods, {maps} maps in {seconds:.1f} s")


if __name__ == "__main__":
    main()
