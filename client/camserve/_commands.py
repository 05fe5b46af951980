"""The CLI's commands: each takes parsed arguments and a client, prints, and returns an exit code.

``camserve.render`` (and so Pillow) is imported only by the commands that draw;
``report`` is in ``_report_command``, what ``explain`` writes in ``_explain_outputs``.
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

from camserve._arguments import CommandError
from camserve._many import Outcome
from camserve._method_options import method_infos, split_options
from camserve._progress import ProgressBar
from camserve.client import ExplainClient
from camserve.errors import CamserveError
from camserve.results import Explanation, ModelInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


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
    from camserve.render import COLORMAP_NAMES, is_colormap

    if not is_colormap(name):
        raise CommandError(
            f"unknown colormap {name!r}; choices: {', '.join(COLORMAP_NAMES)} "
            "(or any matplotlib colormap, with the plots extra)"
        )


def chosen_targets(args: argparse.Namespace) -> list[int] | None:
    """``--targets``, else ``--target``, else None (the top class)."""
    if getattr(args, "targets", None):
        return list(args.targets)
    target = getattr(args, "target", None)
    return None if target is None else [target]


def _top(ex: Explanation) -> str:
    return f"{ex.top.name} {ex.top.probability:.3f}" if ex.scores else ""


def explain_files(
    client: ExplainClient,
    paths: Sequence[Path],
    model: str,
    method: str,
    concurrency: int,
    bar: ProgressBar,
    **request: Any,
) -> list[Outcome]:
    """Each file explained as uint8 heatmaps, ``concurrency`` in flight, ``bar`` advanced;
    a failure stays in its file's place. ``request``: ``explain_many``'s other arguments."""
    return client.explain_many(
        [str(p) for p in paths],
        model=model,
        method=method,
        dtype="uint8",
        concurrency=concurrency,
        raise_errors=False,
        progress=bar,
        **request,
    )


def explain(args: argparse.Namespace, client: ExplainClient) -> int:
    """A figure per image (``--plain``: the bare overlay), or, for the methods that explain
    no class, their own pictures and files (see ``_explain_outputs``)."""
    from camserve import _explain_outputs as outputs
    from camserve.render import PLOTS_EXTRA_HINT, has_matplotlib

    check_colormap(args.colormap)
    info = resolve_model(client, args.model, [args.method])
    paths = collect_images(args.images)
    method = method_infos(client).get(args.method)
    if method is None:
        raise CommandError(f"the server lists no method {args.method!r}")
    options = split_options(args.option, [method], info)[method.id]
    out = outputs.Destination(Path(args.out))
    out.folder.mkdir(parents=True, exist_ok=True)
    if method.id in outputs.ACTIVATION_METHODS:
        return outputs.explain_without_classes(client, info, method.id, args, options, paths, out)
    rich = not args.plain and has_matplotlib()
    if not args.plain and not rich:
        _err(f"writing bare overlays: captioned figures need matplotlib; {PLOTS_EXTRA_HINT}")
    drawn = 2 if rich else 1  # a figure takes a while: drawing counts as a step too
    bar = ProgressBar("explain", drawn * len(paths), unit="step")
    failed = 0
    try:
        outcomes = explain_files(
            client,
            paths,
            info.name,
            args.method,
            args.concurrency,
            bar,
            targets=chosen_targets(args),
            layer=args.layer,
            faithfulness=_score_names(args.faithfulness),
            options=options or None,
            return_raw=rich and outputs.wants_raw(method),
        )
        bar.offset = len(paths)
        for done, (path, outcome) in enumerate(zip(paths, outcomes, strict=True), start=1):
            if isinstance(outcome, CamserveError):
                _err(f"{path}: {outcome.code.name}: {outcome.details}")
                failed += 1
                continue
            written = outputs.save_maps(path, outcome, out, args, rich)
            scores = _scores(outcome, args.faithfulness)
            bar.print(f"{path} -> {', '.join(str(p) for p in written)}  {_top(outcome)}{scores}")
            if rich:
                bar(done)
    finally:
        bar.close()
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


def _prediction_method(info: ModelInfo) -> str:
    for method in ("cam", "gradcam"):
        if method in info.methods:
            return method
    return info.methods[0]


def embed(args: argparse.Namespace, client: ExplainClient) -> int:
    """Embed every image of a folder; optionally plot them (PCA) and save the vectors."""
    from camserve.render import PLOTS_EXTRA_HINT, has_matplotlib

    if args.plot and not has_matplotlib():
        raise CommandError(f"--plot needs matplotlib; {PLOTS_EXTRA_HINT}")
    info = resolve_model(client, args.model)
    paths = collect_images([args.folder])
    bar = ProgressBar("embed", 2 * len(paths), unit="call")

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
        predicted = explain_files(
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
        title = f"{info.name} embeddings by predicted class, PCA"
        embedding_scatter(pca_2d(matrix), np.array(classes), labels=labels, title=title).save(
            args.plot
        )
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
    "chosen_targets",
    "collect_images",
    "embed",
    "explain",
    "explain_files",
    "health",
    "methods",
    "models",
    "resolve_model",
]
