"""What ``camserve explain`` writes for each kind of method.

Maps (the CAM family, gradients, occlusion): a figure per image, the input beside
one captioned panel per explained class, each with its colour scale (``--plain``,
or without matplotlib: the bare overlay at the image's size). The methods that
explain no class go to their own calls: feature maps (a grid of the strongest
channels, numbered), the channel profile (a bar chart by channel number), filters
(tiles, once: they do not depend on the image) and embeddings (a ``.npy`` vector
per image and a one-line summary).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import numpy as np

from camserve._arguments import CommandError
from camserve._progress import ProgressBar
from camserve.client import ExplainClient
from camserve.errors import CamserveError
from camserve.results import Explanation, MethodInfo, ModelInfo

FIGURE_SIDE: Final = 320  # pixels on the longer side of each picture in a figure
FEATURE_MAPS_SHOWN: Final = 16  # feature maps drawn when --option top_k is not given
TOP_CHANNELS: Final = 5  # channels named in the chart and the printed line
ACTIVATION_METHODS: Final = ("feature_maps", "channel_profile", "filters", "embedding")
RAW_FAMILIES: Final = ("gradient", "perturbation")


class Destination:
    """Where one command writes: a folder, each file name given out once (thread-safe)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._used: set[Path] = set()
        self._lock = threading.Lock()

    def path(self, stem: str, suffix: str = ".png") -> Path:
        """``folder/stem.suffix``, or ``stem-2``, ``stem-3``... when that name is taken."""
        with self._lock:
            path, n = self.folder / f"{stem}{suffix}", 1
            while path in self._used:
                n += 1
                path = self.folder / f"{stem}-{n}{suffix}"
            self._used.add(path)
            return path


def wants_raw(method: MethodInfo) -> bool:
    """Whether the method's pictures are drawn from its raw attribution (see ``panels``)."""
    return method.family in RAW_FAMILIES


def _err(message: str) -> None:
    print(f"camserve: {message}", file=sys.stderr)


def save_maps(
    path: Path, explanation: Explanation, out: Destination, args: argparse.Namespace, rich: bool
) -> list[Path]:
    """The figure of ``explanation`` of ``path`` (``rich``), else its bare overlays."""
    from camserve import render

    stem = f"{path.stem}_{explanation.method}"
    if not rich:
        written = []
        several = len(explanation.targets) > 1
        for index, target in enumerate(explanation.targets):
            name = out.path(f"{stem}_{target}" if several else stem)
            overlay = explanation.overlay(path, target=index, colormap=args.colormap,
                                          alpha=args.alpha)  # fmt: skip
            overlay.save(name)
            written.append(name)
        return written
    image = render.to_pil(path)
    image.thumbnail((FIGURE_SIDE, FIGURE_SIDE))
    panels = render.explanation_panels(
        image,
        explanation,
        colormap=args.colormap,
        alpha=args.alpha,
        outlier_perc=args.outlier_perc,
        side=FIGURE_SIDE,
    )
    layer = f", layer {explanation.layer}" if explanation.layer else ""
    title = f"{path.name}: model {explanation.model}{layer}"
    figure = render.panels_figure(panels, title=title, image=render.for_display(image, FIGURE_SIDE))
    name = out.path(stem)
    figure.save(name)
    return [name]


# --- methods that explain no class ----------------------------------------------------


def _strongest(values: Sequence[float], channels: Sequence[int], count: int) -> str:
    order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")[:count]
    return ", ".join(f"ch {channels[k]} ({values[k]:.3g})" for k in order.tolist())


def _feature_maps(
    client: ExplainClient, path: Path, model: ModelInfo, args: argparse.Namespace,
    options: dict[str, Any], out: Destination,
) -> str:  # fmt: skip
    from camserve.render import feature_maps_figure

    top_k = int(options.get("top_k", FEATURE_MAPS_SHOWN))
    found = client.activations(str(path), model=model.name, layer=args.layer, top_k=top_k)
    assert found.maps is not None
    means = found.profile.tolist()  # aligned with found.channels
    which = f"the {len(means)} strongest channels" if top_k else f"all {len(means)} channels"
    title = (
        f"{path.name}: model {model.name}, layer {found.layer}, {which} "
        "(by mean activation, shown in brackets)"
    )
    name = out.path(f"{path.stem}_feature_maps")
    feature_maps_figure(found.maps, found.channels, title=title, means=means).save(name)
    return f"{path} -> {name}  strongest: {_strongest(means, found.channels, 3)}"


def _channel_profile(
    client: ExplainClient, path: Path, model: ModelInfo, args: argparse.Namespace,
    options: dict[str, Any], out: Destination,
) -> str:  # fmt: skip
    from camserve.render import channel_profile_chart

    found = client.activations(str(path), model=model.name, layer=args.layer, profile_only=True)
    channels = list(range(found.profile.size))
    title = f"{path.name}: model {model.name}, layer {found.layer}: mean activation per channel"
    name = out.path(f"{path.stem}_channel_profile")
    channel_profile_chart(found.profile, channels=channels, top=TOP_CHANNELS, title=title).save(
        name
    )
    return f"{path} -> {name}  strongest: {_strongest(found.profile.tolist(), channels, 5)}"


def _embedding(
    client: ExplainClient, path: Path, model: ModelInfo, args: argparse.Namespace,
    options: dict[str, Any], out: Destination,
) -> str:  # fmt: skip
    normalize = bool(options.get("normalize", False))
    vector = client.embed(str(path), model=model.name, layer=args.layer, normalize=normalize)
    name = out.path(f"{path.stem}_embedding", ".npy")
    np.save(name, vector)
    order = np.argsort(-np.abs(vector), kind="stable")[:TOP_CHANNELS]
    top = ", ".join(f"{k} ({vector[k]:+.3g})" for k in order.tolist())
    return (
        f"{path} -> {name}  dim {vector.size}, L2 norm {float(np.linalg.norm(vector)):.4g}, "
        f"largest components: {top}"
    )


Writer = Callable[
    [ExplainClient, Path, ModelInfo, argparse.Namespace, dict[str, Any], Destination], str
]
PER_IMAGE: Final[dict[str, Writer]] = {
    "feature_maps": _feature_maps,
    "channel_profile": _channel_profile,
    "embedding": _embedding,
}
NEEDS_MATPLOTLIB: Final = ("feature_maps", "channel_profile", "filters")


def _filters(
    client: ExplainClient, model: ModelInfo, args: argparse.Namespace, out: Destination
) -> int:
    from camserve.render import filters_figure
    from camserve.render.figures import MAX_TILES

    found = client.filters(model.name, args.layer)
    count, channels, height, width = found.weights.shape
    shown = f", the first {MAX_TILES}" if count > MAX_TILES else ""
    title = (
        f"model {model.name}, layer {found.layer}: {count} filters of "
        f"{channels}x{height}x{width}{shown}"
    )
    name = out.path(f"{model.name}_{found.layer}_filters")
    filters_figure(found.weights, title=title).save(name)
    print(f"{found.layer} -> {name}  {count} filters of {channels}x{height}x{width} "
          "(the same for every image)")  # fmt: skip
    return 0


def explain_without_classes(
    client: ExplainClient,
    model: ModelInfo,
    method: str,
    args: argparse.Namespace,
    options: dict[str, Any],
    paths: Sequence[Path],
    out: Destination,
) -> int:
    """Run ``method`` (one of ``ACTIVATION_METHODS``) on every image; write and print its
    output. Returns the exit code: 1 when any image failed."""
    from camserve.render import PLOTS_EXTRA_HINT, has_matplotlib

    if method in NEEDS_MATPLOTLIB and not has_matplotlib():
        raise CommandError(f"drawing {method} needs matplotlib; {PLOTS_EXTRA_HINT}")
    if method == "filters":
        return _filters(client, model, args, out)
    write = PER_IMAGE[method]
    bar = ProgressBar(method, len(paths), unit="image")

    def one(path: Path) -> str | CamserveError:
        try:
            return write(client, path, model, args, options, out)
        except CamserveError as exc:
            return exc

    failed = 0
    try:
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            lines = pool.map(one, paths)
            for done, (path, line) in enumerate(zip(paths, lines, strict=True), start=1):
                bar(done)
                if isinstance(line, CamserveError):
                    _err(f"{path}: {line.code.name}: {line.details}")
                    failed += 1
                else:
                    bar.print(line)
    finally:
        bar.close()
    return 1 if failed else 0


__all__ = [
    "ACTIVATION_METHODS",
    "FIGURE_SIDE",
    "Destination",
    "explain_without_classes",
    "save_maps",
    "wants_raw",
]
