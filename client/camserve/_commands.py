"""The CLI's commands: each takes parsed arguments and a client, prints, and returns an exit code.

``camserve.render`` (and so Pillow) is imported only by the commands that draw.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from camserve._many import Outcome
from camserve._progress import ProgressBar
from camserve.client import ExplainClient
from camserve.errors import CamserveError
from camserve.results import Explanation, ModelInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
REPORT_SIDE = 384  # longest side of each picture in an HTML report, in pixels


class CommandError(Exception):
    """A failure to report as one line: bad paths, unknown model or method."""


def _err(message: str) -> None:
    print(f"camserve: {message}", file=sys.stderr)


def collect_images(paths: Iterable[str]) -> list[Path]:
    """Files as given; folders expanded to their image files (by suffix), sorted by name."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            inside = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not inside:
                raise CommandError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {name}")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise CommandError(f"no such file or folder: {name}")
    if not found:
        raise CommandError("no images given")
    return found


def resolve_model(
    client: ExplainClient, name: str | None, methods: Sequence[str] = ()
) -> ModelInfo:
    """The named model (default: the server's first) after checking it offers ``methods``."""
    models = client.models()
    if not models:
        raise CommandError(f"the server at {client.address} serves no models")
    by_name = {m.name: m for m in models}
    if name is None:
        info = models[0]
    elif name in by_name:
        info = by_name[name]
    else:
        raise CommandError(f"unknown model {name!r}; served models: {', '.join(by_name)}")
    for method in methods:
        if method not in info.methods:
            raise CommandError(
                f"method {method!r} is not available for model {info.name!r}; "
                f"its methods: {', '.join(info.methods)}"
            )
    return info


def check_colormap(name: str) -> None:
    """Refuse an unknown colormap before any work is done."""
    from camserve.render import COLORMAP_NAMES

    if name not in COLORMAP_NAMES:
        raise CommandError(f"unknown colormap {name!r}; choices: {', '.join(COLORMAP_NAMES)}")


def _unique_path(folder: Path, stem: str, used: set[Path]) -> Path:
    path, n = folder / f"{stem}.png", 1
    while path in used:
        n += 1
        path = folder / f"{stem}-{n}.png"
    used.add(path)
    return path


def _top(ex: Explanation) -> str:
    return f"{ex.top.name} {ex.top.probability:.3f}" if ex.scores else ""


def _explain_files(
    client: ExplainClient,
    paths: Sequence[Path],
    model: str,
    method: str,
    concurrency: int,
    bar: ProgressBar,
    **options: Any,
) -> list[Outcome]:
    """Each file explained as uint8 heatmaps, ``concurrency`` in flight, ``bar`` advanced;
    a failure stays in its file's place."""
    return client.explain_many(
        [str(p) for p in paths],
        model=model,
        method=method,
        dtype="uint8",
        concurrency=concurrency,
        raise_errors=False,
        progress=bar,
        **options,
    )


def explain(args: argparse.Namespace, client: ExplainClient) -> int:
    """One overlay PNG per image in ``--out``."""
    from camserve.render import overlay

    check_colormap(args.colormap)
    info = resolve_model(client, args.model, [args.method])
    paths = collect_images(args.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar("explain", len(paths))
    try:
        outcomes = _explain_files(
            client,
            paths,
            info.name,
            args.method,
            args.concurrency,
            bar,
            targets=args.target,
            layer=args.layer,
            faithfulness=_score_names(args.faithfulness),
        )
    finally:
        bar.close()
    used: set[Path] = set()
    failed = 0
    for path, outcome in zip(paths, outcomes, strict=True):
        if isinstance(outcome, CamserveError):
            _err(f"{path}: {outcome.code.name}: {outcome.details}")
            failed += 1
            continue
        target = _unique_path(out, f"{path.stem}_{args.method}", used)
        overlay(path, outcome.heatmap, colormap=args.colormap, alpha=args.alpha).save(target)
        print(f"{path} -> {target}  {_top(outcome)}{_scores(outcome, args.faithfulness)}")
    return 1 if failed else 0


def _score_names(flag: str | None) -> list[str]:
    """The names of ``--faithfulness`` (comma-separated), each once."""
    return list(dict.fromkeys(n.strip() for n in (flag or "").split(",") if n.strip()))


def _scores(ex: Explanation, flag: str | None) -> str:
    """The faithfulness scores asked by ``--faithfulness``, as ``  name value`` pairs."""
    names = _score_names(flag)
    found = [(k, v) for k, v in ex.metrics.items() if k.partition("/")[0] in names]
    found.sort(key=lambda item: (names.index(item[0].partition("/")[0]), item[0]))
    return "".join(f"  {name} {value:.4f}" for name, value in found)


def _thumbnail(path: Path) -> Any:
    from camserve.render import to_pil

    image = to_pil(path)
    image.thumbnail((REPORT_SIDE, REPORT_SIDE))
    return image


def report(args: argparse.Namespace, client: ExplainClient) -> int:
    """A self-contained HTML report: each image with its predictions and one overlay per method."""
    from camserve.render import ReportEntry, html_report, overlay

    check_colormap(args.colormap)
    methods = list(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
    if not methods:
        raise CommandError("--methods names no method")
    info = resolve_model(client, args.model, methods)
    paths = collect_images([args.folder])
    bar = ProgressBar("report", len(paths) * len(methods))
    by_method: dict[str, list[Explanation | CamserveError]] = {}
    try:
        for k, method in enumerate(methods):
            bar.offset = k * len(paths)
            by_method[method] = _explain_files(
                client, paths, info.name, method, args.concurrency, bar
            )
    finally:
        bar.close()
    entries = []
    failed = 0
    for i, path in enumerate(paths):
        image = _thumbnail(path)
        overlays = {}
        predictions: list[tuple[str, float]] = []
        for method in methods:
            outcome = by_method[method][i]
            if isinstance(outcome, CamserveError):
                _err(f"{path} ({method}): {outcome.code.name}: {outcome.details}")
                failed += 1
                continue
            overlays[method] = overlay(image, outcome.heatmap, colormap=args.colormap)
            if not predictions:
                predictions = [(s.name, s.probability) for s in outcome.scores]
        entries.append(ReportEntry(path.name, image, predictions, overlays))
    title = args.title or f"camserve: {info.name}, {', '.join(methods)}"
    target = Path(args.out)
    if target.parent != Path():
        target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(html_report(entries, title=title), encoding="utf-8")
    print(f"{len(entries)} images, {len(methods)} methods -> {target}")
    return 1 if failed else 0


def _prediction_method(info: ModelInfo) -> str:
    for method in ("cam", "gradcam"):
        if method in info.methods:
            return method
    return info.methods[0]


def embed(args: argparse.Namespace, client: ExplainClient) -> int:
    """Embed every image of a folder; optionally plot them (PCA) and save the vectors."""
    info = resolve_model(client, args.model)
    paths = collect_images([args.folder])
    bar = ProgressBar("embed", 2 * len(paths))

    def one(path: Path) -> npt.NDArray[np.float32] | CamserveError:
        try:
            return client.embed(
                str(path), model=info.name, layer=args.layer, normalize=args.normalize
            )
        except CamserveError as exc:
            return exc

    try:
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            vectors: list[npt.NDArray[np.float32] | CamserveError] = []
            for vector in pool.map(one, paths):
                vectors.append(vector)
                bar(len(vectors))
        bar.offset = len(paths)
        method = _prediction_method(info)
        predicted = _explain_files(
            client, paths, info.name, method, args.concurrency, bar, size=(1, 1)
        )
    finally:
        bar.close()
    kept, names, classes = [], [], []
    failed = 0
    for path, vector, prediction in zip(paths, vectors, predicted, strict=True):
        problem = next((o for o in (vector, prediction) if isinstance(o, CamserveError)), None)
        if problem is not None:
            _err(f"{path}: {problem.code.name}: {problem.details}")
            failed += 1
            continue
        assert isinstance(vector, np.ndarray) and isinstance(prediction, Explanation)
        kept.append(vector)
        names.append(path.name)
        classes.append(prediction.top.index)
    if not kept:
        raise CommandError("no image could be embedded")
    matrix = np.stack(kept)
    print(f"{len(kept)} embeddings of dimension {matrix.shape[1]} from model {info.name}")
    if args.save:
        np.savez(args.save, names=np.array(names), vectors=matrix, classes=np.array(classes))
        print(f"vectors -> {args.save}")
    if args.plot:
        from camserve.render import embedding_scatter, pca_2d

        labels = info.labels or None
        embedding_scatter(pca_2d(matrix), np.array(classes), labels=labels).save(args.plot)
        print(f"plot -> {args.plot}")
    return 1 if failed else 0


def models(args: argparse.Namespace, client: ExplainClient) -> int:
    """The server's models, one line each."""
    for m in client.models():
        h, w = m.input_size
        labels = "labels" if m.labels else "no labels"
        print(
            f"{m.name}  {h}x{w}  {m.num_classes} classes ({labels})  "
            f"default layer: {m.default_layer}  format: {m.format}  "
            f"weights: {m.weights_source or 'not reported'}  methods: {', '.join(m.methods)}"
        )
    return 0


def methods(args: argparse.Namespace, client: ExplainClient) -> int:
    """The server's methods, one line each, with their options' defaults."""
    for m in client.methods():
        options = ", ".join(f"{k}={v}" for k, v in m.options.items()) or "no options"
        print(f"{m.id}  ({m.family})  {options}")
    return 0


def health(args: argparse.Namespace, client: ExplainClient) -> int:
    """The server's health; exit code 0 only when SERVING."""
    status = client.health()
    print(f"{client.address}: {status}")
    return 0 if status == "SERVING" else 1


__all__ = [
    "CommandError",
    "check_colormap",
    "collect_images",
    "embed",
    "explain",
    "health",
    "methods",
    "models",
    "report",
    "resolve_model",
]
