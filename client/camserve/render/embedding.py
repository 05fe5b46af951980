"""2-D embeddings drawn: a scatter coloured by class (matplotlib), and a grid of thumbnails."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from camserve.render import _mpl
from camserve.render._text import RGB
from camserve.render.images import ImageLike, to_pil

# matplotlib's tab10, then the lighter half of tab20.
_PALETTE: Final[tuple[RGB, ...]] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)  # fmt: skip


def class_colors(count: int) -> list[RGB]:
    """``count`` distinct colours: tab10, tab20's light half, then hues a golden angle apart."""
    colours = list(_PALETTE[:count])
    for k in range(count - len(colours)):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.65, 0.85)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


def _points(xy: npt.ArrayLike) -> npt.NDArray[np.float64]:
    points = np.asarray(xy, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"xy must be an (N, 2) array, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("xy must be finite")
    return points


def _legend_name(value: Any, labels: Sequence[str] | None) -> str:
    if labels is not None and isinstance(value, int | np.integer) and 0 <= value < len(labels):
        return labels[int(value)]
    return str(value)


def embedding_scatter(
    xy: npt.ArrayLike,
    classes: npt.ArrayLike,
    *,
    labels: Sequence[str] | None = None,
    size: int = 600,
    radius: int = 3,
    title: str = "embeddings",
    axis_labels: tuple[str, str] = ("PC 1", "PC 2"),
) -> Image.Image:
    """Points (N, 2) coloured by class (N,), in a ``size``-pixel-high figure with a title,
    axis labels and a legend of the classes on the right (matplotlib, the plots extra).

    Both axes share one scale. Integer classes are named ``labels[c]`` where given.
    """
    points = _points(xy)
    kinds = np.asarray(classes).ravel()
    if kinds.shape[0] != points.shape[0]:
        raise ValueError(f"{kinds.shape[0]} classes for {points.shape[0]} points")
    if size < 64:
        raise ValueError(f"size must be at least 64, got {size}")
    unique, which = np.unique(kinds, return_inverse=True)
    colours = class_colors(len(unique))
    names = [_legend_name(u, labels) for u in unique.tolist()]
    figure = _mpl.new_figure(size + max(160, size // 3), size, "the embedding plot")
    ax = figure.subplots()
    for k, (name, colour) in enumerate(zip(names, colours, strict=True)):
        chosen = which.ravel() == k
        ax.scatter(points[chosen, 0], points[chosen, 1], s=(2 * radius) ** 2,
                   color=[c / 255 for c in colour], label=name)  # fmt: skip
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(f"{title} ({points.shape[0]} points)", fontsize=11)
    if names:
        ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
                  ncols=1 if len(names) <= 24 else 2)  # fmt: skip
    return _mpl.to_image(figure)


def snap_to_grid(xy: npt.ArrayLike, grid: int) -> npt.NDArray[np.intp]:
    """A distinct (row, col) cell of a ``grid`` x ``grid`` lattice for each point (N, 2).

    Each axis is stretched to span the lattice (y upwards, so high y is row 0); then,
    the points nearest a lattice node first, each takes the nearest free cell.
    """
    points = _points(xy)
    count = points.shape[0]
    if grid < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    if count > grid * grid:
        raise ValueError(f"{count} points do not fit a {grid}x{grid} grid")
    if count == 0:
        return np.zeros((0, 2), dtype=np.intp)
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    unit = np.where(high > low, (points - low) / span, 0.5)
    target = np.stack([(1.0 - unit[:, 1]) * (grid - 1), unit[:, 0] * (grid - 1)], axis=1)

    rows, cols = np.divmod(np.arange(grid * grid), grid)
    cells = np.stack([rows, cols], axis=1).astype(np.float64)
    free = np.ones(grid * grid, dtype=bool)
    offset = np.linalg.norm(target - np.rint(target), axis=1)
    result = np.zeros((count, 2), dtype=np.intp)
    for i in np.argsort(offset, kind="stable").tolist():
        distance = np.sum((cells - target[i]) ** 2, axis=1)
        distance[~free] = np.inf
        best = int(np.argmin(distance))
        free[best] = False
        result[i] = (best // grid, best % grid)
    return result


def thumbnail_map(
    xy: npt.ArrayLike,
    images: Sequence[ImageLike],
    *,
    grid: int = 20,
    thumb: int = 48,
    background: RGB = (255, 255, 255),
) -> Image.Image:
    """Thumbnails placed by 2-D position on a ``grid`` x ``grid`` lattice, one per cell.

    Each image is cropped to a square ``thumb`` pixels wide and put in the free cell
    nearest its point (see ``snap_to_grid``); the result is ``grid * thumb`` square.
    """
    if thumb < 1:
        raise ValueError(f"thumb must be positive, got {thumb}")
    cells = snap_to_grid(xy, grid)
    if len(images) != cells.shape[0]:
        raise ValueError(f"{len(images)} images for {cells.shape[0]} points")
    canvas = Image.new("RGB", (grid * thumb, grid * thumb), background)
    for (row, col), image in zip(cells.tolist(), images, strict=True):
        tile = ImageOps.fit(to_pil(image), (thumb, thumb), Image.Resampling.BICUBIC)
        canvas.paste(tile, (col * thumb, row * thumb))
    return canvas
