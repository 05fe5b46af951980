"""Pictures made by optimisation jobs: a labelled grid of RGB images (channel or class
visualisations), and an adversarial example beside its original and perturbation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from camserve.render._text import draw_centered, fit_text, font, line_height

WHITE = (255, 255, 255)


def _scaled(image: npt.NDArray[np.uint8], cell: int) -> Image.Image:
    """``image`` scaled so its longer side is ``cell`` (nearest-neighbour when enlarging)."""
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB")
    width, height = picture.size
    scale = cell / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == picture.size:
        return picture
    method = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    return picture.resize(size, method)


def _check(images: Sequence[npt.NDArray[np.uint8]], labels: Sequence[str]) -> None:
    if not images:
        raise ValueError("no images to lay out")
    if len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")
    for image in images:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (H, W, 3), got {image.dtype} {image.shape}")


def labelled_grid(
    images: Sequence[npt.NDArray[np.uint8]],
    labels: Sequence[str],
    *,
    columns: int = 8,
    cell: int = 128,
    padding: int = 6,
    title: str | None = None,
) -> Image.Image:
    """RGB images in rows of ``columns``, each scaled to ``cell`` pixels and named underneath."""
    _check(images, labels)
    if columns < 1 or cell < 1 or padding < 0:
        raise ValueError("columns and cell must be positive, padding non-negative")
    tiles = [_scaled(image, cell) for image in images]
    face = font(max(10, min(14, cell // 8)))
    label_h = line_height(face) + 4
    title_face = font(max(12, min(20, cell // 5)))
    title_h = line_height(title_face) + padding if title else 0
    ncols = min(columns, len(tiles))
    nrows = -(-len(tiles) // ncols)
    step_x, step_y = cell + padding, cell + label_h + padding
    width = padding + ncols * step_x
    height = padding + title_h + nrows * step_y
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw_centered(draw, width / 2, padding, fit_text(title, title_face, width), title_face)
    for k, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        left = padding + (k % ncols) * step_x
        top = padding + title_h + (k // ncols) * step_y
        canvas.paste(tile, (left + (cell - tile.width) // 2, top + (cell - tile.height) // 2))
        text = fit_text(label, face, cell + padding)
        draw_centered(draw, left + cell / 2, top + cell + 2, text, face)
    return canvas


def adversarial_panel(
    original: npt.NDArray[np.uint8],
    perturbation: npt.NDArray[np.uint8],
    adversarial: npt.NDArray[np.uint8],
    captions: tuple[str, str, str],
    *,
    cell: int = 224,
    padding: int = 8,
    title: str | None = None,
) -> Image.Image:
    """Original, perturbation (amplified for display) and adversarial image side by side,
    each captioned (e.g. with its prediction)."""
    return labelled_grid(
        [original, perturbation, adversarial],
        list(captions),
        columns=3,
        cell=cell,
        padding=padding,
        title=title,
    )


__all__ = ["adversarial_panel", "labelled_grid"]
