"""``camserve report``: an HTML page comparing methods on a folder of images.

Each image is explained by every method (``--targets`` or the top class), and
drawn as captioned panels with colour scales (``camserve.render.panels``) in a page
made by ``camserve.render.report``: pictures inline as JPEG, or beside the page
with ``--images-beside``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from camserve._arguments import CommandError
from camserve._commands import (
    check_colormap,
    chosen_targets,
    collect_images,
    explain_files,
    resolve_model,
)
from camserve._explain_outputs import ACTIVATION_METHODS, wants_raw
from camserve._many import Outcome
from camserve._method_options import describe, method_infos, split_options
from camserve._progress import ProgressBar
from camserve.client import ExplainClient
from camserve.errors import CamserveError
from camserve.results import MethodInfo, ModelInfo


def _methods(args: argparse.Namespace, client: ExplainClient) -> tuple[ModelInfo, list[MethodInfo]]:
    names = list(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
    if not names:
        raise CommandError("--methods names no method")
    model = resolve_model(client, args.model, names)
    classless = [name for name in names if name in ACTIVATION_METHODS]
    if classless:
        raise CommandError(
            f"the report compares maps that explain a class; {', '.join(classless)} explain "
            "none: draw them with camserve explain --method NAME"
        )
    known = method_infos(client)
    missing = [name for name in names if name not in known]
    if missing:
        raise CommandError(f"the server lists no method {', '.join(missing)}")
    return model, [known[name] for name in names]


def _summary(model: ModelInfo, methods: list[MethodInfo], images: int, options: str) -> str:
    parts = [
        f"model {model.name}" + (f" ({model.weights_source})" if model.weights_source else ""),
        f"{images} images",
        f"methods {', '.join(m.id for m in methods)}",
    ]
    if options:
        parts.append(f"options: {options}")
    return " · ".join(parts)


def report(args: argparse.Namespace, client: ExplainClient) -> int:
    """Explain a folder's images by every method and write the HTML report."""
    from camserve.render import ReportEntry, explanation_panels, to_pil, write_report
    from camserve.render.panels import DISPLAY_SIDE
    from camserve.render.report import require_jinja2

    require_jinja2()
    check_colormap(args.colormap)
    model, methods = _methods(args, client)
    options = split_options(args.option, methods, model)
    paths = collect_images([args.folder])
    bar = ProgressBar("report", len(paths) * len(methods), unit="map")
    by_method: dict[str, list[Outcome]] = {}
    try:
        for k, method in enumerate(methods):
            bar.offset = k * len(paths)
            by_method[method.id] = explain_files(
                client,
                paths,
                model.name,
                method.id,
                args.concurrency,
                bar,
                targets=chosen_targets(args),
                options=options[method.id] or None,
                return_raw=wants_raw(method),
            )
    finally:
        bar.close()
    entries = []
    failed = 0
    for i, path in enumerate(paths):
        image = to_pil(path)
        image.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
        panels: list[Any] = []
        predictions: list[tuple[str, float]] = []
        problems = []
        for method in methods:
            outcome = by_method[method.id][i]
            if isinstance(outcome, CamserveError):
                problem = f"{method.id}: {outcome.code.name}: {outcome.details}"
                print(f"camserve: {path} ({problem})", file=sys.stderr)
                problems.append(problem)
                failed += 1
                continue
            panels += explanation_panels(
                image, outcome, colormap=args.colormap, alpha=args.alpha,
                outlier_perc=args.outlier_perc,
            )  # fmt: skip
            if not predictions:
                predictions = [(s.name, s.probability) for s in outcome.scores]
        entries.append(ReportEntry(path.name, image, predictions, panels, problems))
    title = args.title or f"camserve: {model.name}, {', '.join(m.id for m in methods)}"
    summary = _summary(model, methods, len(paths), describe(options))
    target = write_report(
        Path(args.out), entries, title=title, summary=summary, images_beside=args.images_beside
    )
    size = target.stat().st_size
    print(f"{len(entries)} images, {len(methods)} methods -> {target} ({size / 1e6:.2f} MB)")
    return 1 if failed else 0


__all__ = ["report"]
