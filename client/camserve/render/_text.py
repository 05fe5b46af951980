"""Text drawing helpers shared by the figures: Pillow's default font, measured."""

from __future__ import annotations

import functools
import math
from typing import Final, TypeAlias

from PIL import ImageDraw, ImageFont

Font: TypeAlias = ImageFont.FreeTypeFont | ImageFont.ImageFont
RGB: TypeAlias = tuple[int, int, int]

TEXT: Final[RGB] = (32, 32, 32)
ELLIPSIS: Final = "…"


@functools.lru_cache(maxsize=16)
def font(size: int) -> Font:
    """Pillow's default font at ``size`` pixels (a fixed bitmap font where FreeType is absent)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 takes no size
        return ImageFont.load_default()


def text_width(text: str, face: Font) -> int:
    """Width in pixels of ``text`` drawn in ``face``."""
    if not text:
        return 0
    left, _, right, _ = face.getbbox(text)
    return math.ceil(right - left)


def line_height(face: Font) -> int:
    """Height in pixels of one line of ``face``, from the drawing origin to the lowest descender."""
    _, _, _, bottom = face.getbbox("Ag|")
    return math.ceil(bottom)


def fit_text(text: str, face: Font, max_width: int) -> str:
    """``text``, cut short with an ellipsis where it is wider than ``max_width``."""
    if text_width(text, face) <= max_width:
        return text
    for end in range(len(text) - 1, 0, -1):
        shorter = text[:end].rstrip() + ELLIPSIS
        if text_width(shorter, face) <= max_width:
            return shorter
    return ""


def draw_centered(
    draw: ImageDraw.ImageDraw,
    center_x: float,
    top: float,
    text: str,
    face: Font,
    fill: RGB = TEXT,
) -> None:
    """Draw one line of ``text`` centred on ``center_x`` with its box starting at ``top``."""
    if not text:
        return
    left, _, right, _ = face.getbbox(text)
    draw.text((round(center_x - (right - left) / 2 - left), round(top)), text, fill=fill, font=face)
