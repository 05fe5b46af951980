"""Labelled rows of small pictures: maximally activating patches, and neighbour strips."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from camserve.render._text import TEXT, draw_centered, fit_text, font, line_height, text_width
from camserve.render.grids import _fit
from camserve.render.images import ImageLike, to_pil

Tile = tuple[ImageLike, str]
"""A picture and the caption written under it."""


def picture_rows(
    rows: Sequence[tuple[str, Sequence[Tile]]],
    *,
    cell: int = 64,
    padding: int = 6,
    title: str | None = None,
) -> Image.Image:
    """One row per ``(name, tiles)``: the name on the left, then each picture with its caption.

    Every picture is scaled so that its longer side is ``cell`` pixels (a patch cut at
    the image border is smaller than the others and is scaled up like them), centred
    in a ``cell`` square; rows are as wide as the longest one.
    """
    if cell < 8 or padding < 0:
        raise ValueError("cell must be at least 8 and padding non-negative")
    if not rows:
        raise ValueError("no rows to draw")
    caption_face = font(max(9, min(12, cell // 6)))
    name_face = font(max(10, min(14, cell // 5)))
    caption_h = line_height(caption_face) + 4
    name_w = max(text_width(name, name_face) for name, _ in rows) + padding
    columns = max(1, max(len(tiles) for _, tiles in rows))
    title_face = font(14)
    title_h = line_height(title_face) + padding if title else 0
    row_h = cell + caption_h + padding
    width = padding + name_w + columns * (cell + padding)
    height = padding + title_h + len(rows) * row_h
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw_centered(draw, width / 2, padding, fit_text(title, title_face, width), title_face)
    for r, (name, tiles) in enumerate(rows):
        top = padding + title_h + r * row_h
        name_top = top + (cell - line_height(name_face)) / 2
        draw.text((padding, round(name_top)), name, fill=TEXT, font=name_face)
        for c, (picture, caption) in enumerate(tiles):
            left = padding + name_w + c * (cell + padding)
            tile = _fit(to_pil(picture), cell)
            canvas.paste(tile, (left + (cell - tile.width) // 2, top + (cell - tile.height) // 2))
            text = fit_text(caption, caption_face, cell + padding)
            draw_centered(draw, left + cell / 2, top + cell + 2, text, caption_face)
    return canvas


__all__ = ["Tile", "picture_rows"]
