"""``camserve evaluate``: rank explanation methods for a model over a folder of images.

    camserve evaluate DIR --model M --methods gradcam,saliency,occlusion
        [--metrics deletion,insertion] [--targets 3 | 3,0,2,...] [--layer L]
        [--boxes boxes.json [--pointing-tolerance 15]] [--sanity-check [--sanity-stages 5]]
        [--seed 0] [--no-random] [--option occlusion.window=8]... [--out eval.html]
        [--json eval.json]

The evaluation runs on the server as one job, its progress on stderr; the ranking and
the sanity verdicts are printed, and written as an HTML page (``--out``, the ``plots``
extra) and as JSON (``--json``). ``boxes.json`` maps an image's file name to its boxes,
``{"cat.png": [[x0, y0, x1, y1], ...], ...}``, in pixels of the image as the server decodes
it (EXIF orientation applied); an image it leaves out sits out of the pointing game.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camserve._arguments import (
    AddCommand,
    CommandError,
    checked,
    parse_indices,
    parse_option,
    positive,
)
from camserve._commands import collect_images, resolve_model
from camserve._evaluate_text import evaluation_text
from camserve._method_options import method_infos, split_options
from camserve.client import ExplainClient
from camserve.evaluation import Evaluation

_stages = checked(int, lambda value: 1 <= value <= 16, "in [1, 16]")
_tolerance = checked(int, lambda value: 0 <= value <= 1000, "in [0, 1000]")
_steps = checked(int, lambda value: 2 <= value <= 256, "in [2, 256]")
_percentile = checked(int, lambda value: 1 <= value <= 99, "in [1, 99]")


def _names(text: str | None) -> list[str]:
    """Comma-separated names, each once, in order."""
    return list(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))


def read_boxes(path: str, images: Sequence[Path]) -> list[list[Any]]:
    """One list of boxes per image, from a JSON object that maps file names to lists of
    ``[x0, y0, x1, y1]`` (an image it leaves out gets none); the SDK checks each box."""
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CommandError(f"cannot read --boxes {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise CommandError(f"--boxes {path} is not JSON: {exc}") from None
    if not isinstance(found, dict):
        raise CommandError(
            f'--boxes {path} must be an object: {{"file name": [[x0, y0, x1, y1], ...]}}'
        )
    names = [image.name for image in images]
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise CommandError(f"--boxes {path} names files not among the images: {', '.join(unknown)}")
    for name, boxes in found.items():
        if not isinstance(boxes, list) or not all(isinstance(box, list) for box in boxes):
            raise CommandError(f"--boxes {path}: {name} must be a list of [x0, y0, x1, y1] boxes")
    return [found.get(name, []) for name in names]


def _methods(
    args: argparse.Namespace, client: ExplainClient
) -> tuple[str, list[str], dict[str, dict[str, Any]]]:
    """The model's name, the methods and their ``--option``s, checked: each method served
    for the model, each one that makes a map per class, each option one they take."""
    names = _names(args.methods)
    if not names:
        raise CommandError("--methods names no method")
    model = resolve_model(client, args.model, names)
    known = method_infos(client)
    missing = [name for name in names if name not in known]
    if missing:
        raise CommandError(f"the server lists no method {', '.join(missing)}")
    classless = [name for name in names if not known[name].uses_targets]
    if classless:
        raise CommandError(
            f"an evaluation scores maps that explain a class; {', '.join(classless)} explain none"
        )
    options = split_options(args.option, [known[name] for name in names], model)
    return model.name, names, {method: values for method, values in options.items() if values}


def _targets(args: argparse.Namespace, count: int) -> list[int] | None:
    if args.targets is None:
        return None
    classes: list[int] = args.targets
    if len(classes) == 1:
        return classes * count
    if len(classes) != count:
        raise CommandError(
            f"--targets gives {len(classes)} classes for {count} images: give one class "
            "for all, or one per image in file-name order"
        )
    return classes


def _require_plots(args: argparse.Namespace) -> None:
    """Before any work: the HTML page needs the plots extra."""
    if args.out:
        from camserve.render._mpl import require
        from camserve.render._templates import require_jinja2

        require_jinja2()
        require("the evaluation report")


def _write(evaluation: Evaluation, args: argparse.Namespace, names: list[str]) -> None:
    if args.json:
        target = Path(args.json)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"images": names, **evaluation.to_dict()}, indent=1))
        print(f"wrote {target}")
    if args.out:
        from camserve.render.evaluation_report import describe, write_evaluation_report

        summary = f"{describe(evaluation)} · images from {args.folder}"
        page = write_evaluation_report(
            Path(args.out), evaluation, title=args.title, summary=summary
        )
        print(f"wrote {page} ({page.stat().st_size / 1e6:.2f} MB)")


def evaluate(args: argparse.Namespace, client: ExplainClient) -> int:
    """Evaluate the methods on a folder's images; print the ranking, write the pages."""
    _require_plots(args)
    paths = collect_images([args.folder])
    model, methods, options = _methods(args, client)
    boxes = read_boxes(args.boxes, paths) if args.boxes else None
    evaluation = client.evaluate(
        model=model,
        methods=methods,
        images=[str(p) for p in paths],
        targets=_targets(args, len(paths)),
        layer=args.layer,
        metrics=_names(args.metrics) or None,
        faithfulness_steps=args.faithfulness_steps or 0,
        faithfulness_percentile=args.faithfulness_percentile or 0,
        boxes=boxes,
        pointing_tolerance=args.pointing_tolerance,
        sanity_check=args.sanity_check,
        sanity_stages=args.sanity_stages or 0,
        seed=args.seed,
        include_random=not args.no_random,
        method_options=options or None,
        progress=True,
        timeout=args.job_timeout,
    )
    print(evaluation_text(evaluation))
    _write(evaluation, args, [p.name for p in paths])
    return 0


def register(command: AddCommand) -> None:
    """Add ``evaluate`` to the CLI's commands."""
    sub = command(
        "evaluate",
        evaluate,
        "score and rank explanation methods for a model over a folder of images: "
        "faithfulness, the pointing game (--boxes), the model-randomisation sanity check",
    )
    sub.add_argument("folder", metavar="DIR", help="folder of images")
    sub.add_argument("--model", help="model name (default: the server's first model)")
    sub.add_argument(
        "--methods",
        default="gradcam,saliency,occlusion",
        help="comma-separated method ids (default gradcam,saliency,occlusion)",
    )
    sub.add_argument(
        "--metrics",
        metavar="SCORES",
        help="comma-separated faithfulness scores (default: every one: deletion, insertion, "
        "drop_in_confidence, increase_in_confidence, road_morf, road_lerf)",
    )
    sub.add_argument(
        "--targets",
        metavar="CLASSES",
        type=parse_indices,
        help="one class for every image, or one per image in file-name order, e.g. 3 or "
        "3,0,2,2 (default: each image's top class)",
    )
    sub.add_argument("--layer", help="layer of the layer-based methods (default: the model's)")
    sub.add_argument(
        "--boxes",
        metavar="JSON",
        help='boxes of each image\'s class for the pointing game: {"file name": '
        "[[x0, y0, x1, y1], ...], ...} in pixels of the image (EXIF orientation applied), "
        "x1 and y1 exclusive; an image left out sits out of the game",
    )
    sub.add_argument(
        "--pointing-tolerance",
        metavar="PX",
        type=_tolerance,
        help="pixels of the model's input a map's maximum may lie from a box (default 15)",
    )
    sub.add_argument(
        "--sanity-check",
        action="store_true",
        help="re-initialise the model's layers from the output down and compare each "
        "method's maps with the original ones (Spearman): maps that barely change fail",
    )
    sub.add_argument(
        "--sanity-stages",
        metavar="N",
        type=_stages,
        help="stages of the cascade, 1 to 16 (default 5)",
    )
    sub.add_argument(
        "--seed",
        metavar="N",
        type=int,
        default=0,
        help="seed of the random maps and weights (default 0)",
    )
    sub.add_argument(
        "--no-random", action="store_true", help="leave out the random-map baseline row"
    )
    sub.add_argument(
        "--faithfulness-steps",
        metavar="N",
        type=_steps,
        help="deletion and insertion steps (default 20)",
    )
    sub.add_argument(
        "--faithfulness-percentile",
        metavar="P",
        type=_percentile,
        help="ROAD's percentile (default 80)",
    )
    sub.add_argument(
        "--option",
        type=parse_option,
        action="append",
        metavar="NAME=VALUE",
        help="a method option (repeatable): name=value for every chosen method that takes "
        "it, method.name=value for one, e.g. occlusion.window=8",
    )
    sub.add_argument("--out", metavar="HTML", help="write the ranked table and charts here")
    sub.add_argument("--json", metavar="FILE", help="write the whole report as JSON here")
    sub.add_argument("--title", help="the HTML page's title")
    sub.add_argument(
        "--job-timeout",
        metavar="SECONDS",
        type=positive,
        help="seconds the evaluation may take (default: --timeout for each image, times "
        "one plus the sanity stages)",
    )


__all__ = ["evaluate", "read_boxes", "register"]
