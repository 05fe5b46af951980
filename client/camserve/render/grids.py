"""Image grids: methods side by side, feature maps, and first-layer filters."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from camserve.render._text import TEXT, draw_centered, fit_text, font, line_height
from camserve.render.colormaps import apply_colormap
from camserve.render.images import ImageLike, overlay, to_pil

ORIGINAL_LABEL = "original"


def _fit(image: Image.Image, cell: int) -> Image.Image:
    """``image`` scaled so that its longer side is ``cell`` pixels."""
    width, height = image.size
    scale = cell / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def method_grid(
    image: ImageLike,
    heatmaps: Mapping[str, npt.ArrayLike],
    *,
    title: str | None = None,
    colormap: str = "jet",
    alpha: float = 0.5,
    cell: int = 224,
    padding: int = 8,
) -> Image.Image:
    """The image, then its overlay for each method, side by side, each named underneath.

    Every panel is the image scaled so that its longer side is ``cell`` pixels, the
    panels ``padding`` pixels apart: for a square image and n panels the width is
    ``n * cell + (n + 1) * padding``.
    """
    if cell < 1 or padding < 0:
        raise ValueError("cell must be positive and padding non-negative")
    base = _fit(to_pil(image), cell)
    panels = [(ORIGINAL_LABEL, base)]
    panels += [(name, overlay(base, heat, colormap, alpha)) for name, heat in heatmaps.items()]

    label_face = font(max(10, cell // 16))
    label_h = line_height(label_face) + 6
    title_face = font(max(12, cell // 12))
    title_h = line_height(title_face) + padding if title else 0

    width = len(panels) * base.width + (len(panels) + 1) * padding
    height = padding + title_h + base.height + label_h + padding
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw_centered(draw, width / 2, padding, fit_text(title, title_face, width), title_face)
    top = padding + title_h
    for i, (name, panel) in enumerate(panels):
        left = padding + i * (base.width + padding)
        canvas.paste(panel, (left, top))
        label = fit_text(name, label_face, base.width + padding)
        draw_centered(draw, left + base.width / 2, top + base.height + 3, label, label_face)
    return canvas


def _tile(
    tiles: Sequence[npt.NDArray[np.uint8]], nrow: int, padding: int, pad_value: int, extra_h: int
) -> tuple[Image.Image, list[tuple[int, int]]]:
    """Tiles of one size laid out as torchvision's ``make_grid``, with the corner of each.

    ``extra_h`` pixels are left free under every tile (for a label).
    """
    if nrow < 1 or padding < 0:
        raise ValueError("nrow must be positive and padding non-negative")
    if not 0 <= pad_value <= 255:
        raise ValueError(f"pad_value must lie in [0, 255], got {pad_value}")
    tile_h, tile_w = tiles[0].shape[:2]
    columns = min(nrow, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    step_y, step_x = tile_h + extra_h + padding, tile_w + padding
    grid = np.full((rows * step_y + padding, columns * step_x + padding, 3), pad_value, np.uint8)
    corners = []
    for k, tile in enumerate(tiles):
        y = (k // columns) * step_y + padding
        x = (k % columns) * step_x + padding
        grid[y : y + tile_h, x : x + tile_w] = tile
        corners.append((x, y))
    return Image.fromarray(grid), corners


def _min_max(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``values`` scaled to [0, 1]; all zeros where they are constant."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    scaled: npt.NDArray[np.float64] = (values - low) / (high - low)
    return scaled


def _to_bytes(unit: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    return np.rint(unit * 255.0).astype(np.uint8)


def _gray_rgb(unit: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    return np.repeat(_to_bytes(unit)[:, :, None], 3, axis=2)


def _scale_tile(tile: npt.NDArray[np.uint8], cell: int) -> npt.NDArray[np.uint8]:
    height, width = tile.shape[:2]
    scale = cell / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    method = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX
    return np.asarray(Image.fromarray(tile).resize(size, method))


def feature_map_grid(
    maps: npt.ArrayLike,
    *,
    nrow: int = 8,
    padding: int = 2,
    pad_value: int = 255,
    labels: Sequence[str] | None = None,
    cell: int | None = None,
    colormap: str | None = None,
) -> Image.Image:
    """Feature maps (K, h, w) in a grid, like torchvision's ``make_grid``.

    Each map is min-max scaled on its own, then shown in gray, or through
    ``colormap`` where one is named. ``cell`` scales every map so that its longer
    side is ``cell`` pixels (nearest-neighbour when enlarging). ``labels`` (one per
    map) are written under the maps.
    """
    tiles = feature_map_tiles(maps, colormap)
    if labels is not None and len(labels) != len(tiles):
        raise ValueError(f"got {len(labels)} labels for {len(tiles)} maps")
    if cell:
        tiles = [_scale_tile(tile, cell) for tile in tiles]
    if labels is None:
        return _tile(tiles, nrow, padding, pad_value, 0)[0]

    tile_w = tiles[0].shape[1]
    face = font(max(8, min(12, tile_w // 4)))
    label_h = line_height(face) + 2
    grid, corners = _tile(tiles, nrow, padding, pad_value, label_h)
    draw = ImageDraw.Draw(grid)
    ink = TEXT if pad_value >= 128 else (235, 235, 235)
    tile_h = tiles[0].shape[0]
    for (x, y), label in zip(corners, labels, strict=True):
        text = fit_text(label, face, tile_w + padding)
        draw_centered(draw, x + tile_w / 2, y + tile_h + 1, text, face, ink)
    return grid


def filter_images(weights: npt.ArrayLike) -> list[npt.NDArray[np.uint8]]:
    """Convolution filters (K, C, kh, kw) as uint8 RGB tiles (kh, kw, 3), each min-max
    scaled on its own: three-channel filters in colour, others as their channel mean in gray."""
    values = np.asarray(weights, dtype=np.float64)
    if values.ndim != 4 or 0 in values.shape:
        raise ValueError(f"weights must be a non-empty (K, C, kh, kw) array, got {values.shape}")
    if values.shape[1] == 3:
        return [_to_bytes(_min_max(w.transpose(1, 2, 0))) for w in values]
    return [_gray_rgb(_min_max(w.mean(axis=0))) for w in values]


def filter_tiles(
    weights: npt.ArrayLike,
    *,
    nrow: int = 8,
    scale: int = 8,
    padding: int = 2,
    pad_value: int = 255,
) -> Image.Image:
    """Convolution filters (K, C, kh, kw) as tiles (see ``filter_images``), each enlarged
    ``scale`` times (nearest-neighbour)."""
    if scale < 1:
        raise ValueError(f"scale must be positive, got {scale}")
    tiles = [
        np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1) for tile in filter_images(weights)
    ]
    return _tile(tiles, nrow, padding, pad_value, 0)[0]


def feature_map_tiles(
    maps: npt.ArrayLike, colormap: str | None = None
) -> list[npt.NDArray[np.uint8]]:
    """Feature maps (K, h, w) as uint8 RGB tiles, each min-max scaled on its own, in gray
    or through ``colormap``."""
    values = np.asarray(maps, dtype=np.float64)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3 or 0 in values.shape:
        raise ValueError(f"maps must be a non-empty (K, h, w) array, got shape {values.shape}")
    return [apply_colormap(_min_max(m), colormap) if colormap else _gray_rgb(_min_max(m))
            for m in values]  # fmt: skip


def tile_grid(
    tiles: Sequence[npt.NDArray[np.uint8]],
    *,
    columns: int,
    cell: int,
    padding: int,
    label_height: int = 0,
) -> tuple[Image.Image, list[tuple[int, int]]]:
    """Tiles scaled to ``cell`` pixels (nearest when enlarging) in rows of ``columns`` on
    white, ``label_height`` free under each, and the top-left corner of every tile."""
    scaled = [_scale_tile(tile, cell) for tile in tiles]
    return _tile(scaled, columns, padding, 255, label_height)
