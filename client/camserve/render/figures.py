"""Captioned figures with colour scales, drawn by matplotlib (the ``plots`` extra):
explanation panels side by side, and labelled tile grids (feature maps, filters).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
from PIL import Image

from camserve.render import _mpl
from camserve.render.colormaps import colormap_lut
from camserve.render.grids import feature_map_tiles, filter_images, tile_grid
from camserve.render.panels import ColourScale, Panel

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FEATURE_COLORMAP: Final = "viridis"
MAX_TILES: Final = 64  # tiles one grid shows
SCALE_WRAP: Final = 48  # characters per line of a colour scale's label
TITLE_CHAR_PX: Final = 10.0  # pixels per character of a 12 pt title at 100 dpi, with a margin
FEATURE_SCALE: Final = ColourScale(
    FEATURE_COLORMAP,
    0.0,
    1.0,
    ((0.0, "the map's min"), (1.0, "its max")),
    "activation, min-max scaled per map",
)


def draw_scale(figure: Figure, bar: Axes, scale: ColourScale) -> None:
    """``scale`` drawn into the axes ``bar``: a horizontal colour bar with its ticks and
    label; for an RGB picture (no colour map), the label alone."""
    label = textwrap.fill(scale.label, SCALE_WRAP)
    if scale.colormap is None:
        bar.axis("off")
        bar.text(0.5, 1.0, label, ha="center", va="top", fontsize=8, transform=bar.transAxes)
        return
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    colours = _mpl.listed_colormap(scale.colormap, colormap_lut(scale.colormap))
    mappable = ScalarMappable(Normalize(scale.low, scale.high), colours)
    colour_bar = figure.colorbar(mappable, cax=bar, orientation="horizontal")
    colour_bar.set_ticks(
        [value for value, _ in scale.ticks], labels=[text for _, text in scale.ticks]
    )
    colour_bar.ax.tick_params(labelsize=8)
    colour_bar.set_label(label, fontsize=8)


def _columns(figure: Figure, count: int, picture_height: int) -> tuple[list[Axes], list[Axes]]:
    """``count`` columns of a picture above a thin colour-bar row, aligned."""
    grid = figure.subplots(
        2, count, squeeze=False, gridspec_kw={"height_ratios": [picture_height, 14]}
    )
    return list(grid[0]), list(grid[1])


def _title(figure: Figure, text: str, width: float) -> None:
    """``text`` over the figure, wrapped to its ``width`` in pixels."""
    figure.suptitle(textwrap.fill(text, max(30, int(width / TITLE_CHAR_PX))), fontsize=12)


def _show(ax: Axes, picture: Image.Image, caption: str) -> None:
    ax.imshow(np.asarray(picture), interpolation="nearest")
    ax.set_title(caption, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def panels_figure(
    panels: Sequence[Panel],
    *,
    title: str | None = None,
    image: Image.Image | None = None,
    image_caption: str = "input",
) -> Image.Image:
    """``panels`` side by side, each with its caption above and its colour scale below,
    after ``image`` (the input) where given; ``title`` over all."""
    if not panels:
        raise ValueError("no panels to draw")
    pictures = ([image] if image is not None else []) + [p.picture for p in panels]
    cell_w = max(p.width for p in pictures)
    cell_h = max(p.height for p in pictures)
    width = len(pictures) * (cell_w + 40) + 20
    figure = _mpl.new_figure(width, cell_h + 130 + (30 if title else 0), "a captioned figure")
    shown, bars = _columns(figure, len(pictures), cell_h)
    if image is not None:
        _show(shown[0], image, image_caption)
        bars[0].axis("off")
    first = len(pictures) - len(panels)
    for ax, bar, panel in zip(shown[first:], bars[first:], panels, strict=True):
        _show(ax, panel.picture, panel.caption)
        draw_scale(figure, bar, panel.scale)
    if title:
        _title(figure, title, width)
    return _mpl.to_image(figure)


def tiles_figure(
    tiles: Sequence[npt.NDArray[np.uint8]],
    labels: Sequence[str],
    *,
    title: str,
    scale: ColourScale,
    columns: int = 8,
    cell: int = 72,
) -> Image.Image:
    """Tiles (uint8 RGB) in rows of ``columns``, each ``cell`` pixels and labelled under
    it, a title above and ``scale`` below."""
    if not tiles or len(labels) != len(tiles):
        raise ValueError(f"{len(labels)} labels for {len(tiles)} tiles")
    label_h, padding = 14, 6
    mosaic, corners = tile_grid(
        tiles, columns=columns, cell=cell, padding=padding, label_height=label_h
    )
    lines = len(textwrap.wrap(title, max(30, int((mosaic.width + 40) / TITLE_CHAR_PX))))
    figure = _mpl.new_figure(mosaic.width + 40, mosaic.height + 110 + 20 * lines, "a tile grid")
    (ax,), (bar,) = _columns(figure, 1, mosaic.height)
    ax.imshow(np.asarray(mosaic), interpolation="nearest")
    for (x, y), label in zip(corners, labels, strict=True):
        ax.text(x + cell / 2, y + cell + 1, label, ha="center", va="top", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    draw_scale(figure, bar, scale)
    _title(figure, title, mosaic.width + 40)
    return _mpl.to_image(figure)


def feature_maps_figure(
    maps: npt.ArrayLike,
    channels: Sequence[int],
    *,
    title: str,
    means: Sequence[float] | None = None,
    columns: int = 8,
) -> Image.Image:
    """Feature maps (K, h, w) in a grid, each labelled ``ch <channel>`` (and its mean
    activation where ``means`` are given), in viridis with one colour scale."""
    tiles = feature_map_tiles(maps, FEATURE_COLORMAP)
    labels = [f"ch {c}" for c in channels]
    if means is not None:
        labels = [f"{label} ({mean:.2g})" for label, mean in zip(labels, means, strict=True)]
    columns = min(columns, len(tiles))
    return tiles_figure(tiles, labels, title=title, scale=FEATURE_SCALE, columns=columns)


def filters_figure(weights: npt.ArrayLike, *, title: str, columns: int = 8) -> Image.Image:
    """The first ``MAX_TILES`` convolution filters (K, C, kh, kw) as tiles numbered by
    filter, RGB for three input channels, else the channel mean in gray."""
    values = np.asarray(weights, dtype=np.float32)[:MAX_TILES]
    tiles = filter_images(values)
    if values.shape[1] == 3:
        scale = ColourScale(
            None, 0.0, 1.0, (), "each filter's weights min-max scaled, as RGB (grey = middle)"
        )
    else:
        scale = ColourScale(
            "gray",
            0.0,
            1.0,
            ((0.0, "the filter's min"), (1.0, "its max")),
            "mean weight over the input channels, min-max scaled per filter",
        )
    labels = [str(k) for k in range(len(tiles))]
    return tiles_figure(
        tiles, labels, title=title, scale=scale, columns=min(columns, len(tiles)), cell=56
    )


__all__ = [
    "FEATURE_SCALE",
    "MAX_TILES",
    "draw_scale",
    "feature_maps_figure",
    "filters_figure",
    "panels_figure",
    "tiles_figure",
]
