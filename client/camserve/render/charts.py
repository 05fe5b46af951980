"""A bar chart of per-channel activation, its strongest channels named."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from camserve.render._text import RGB, TEXT, draw_centered, fit_text, font, line_height, text_width

BAR: RGB = (120, 150, 190)
TOP_BAR: RGB = (214, 39, 40)
AXIS: RGB = (90, 90, 90)


def channel_profile_chart(
    values: npt.ArrayLike,
    *,
    top: int = 5,
    width: int = 800,
    height: int = 300,
    title: str | None = None,
) -> Image.Image:
    """A bar per channel (K,) of, say, mean activation; the ``top`` highest red, with their index.

    Non-finite values count as 0.
    """
    data = np.nan_to_num(np.asarray(values, dtype=np.float64).ravel(), nan=0.0)
    if data.size == 0:
        raise ValueError("no values to chart")
    if width < 160 or height < 120:
        raise ValueError(f"the chart needs at least 160x120 pixels, got {width}x{height}")
    count = data.size
    top = max(0, min(top, count))

    face = font(12)
    line = line_height(face)
    title_face = font(15)
    low, high = min(0.0, float(data.min())), max(0.0, float(data.max()))
    if high <= low:
        high = low + 1.0
    ticks = [high, 0.0] + ([low] if low < 0 else [])
    tick_labels = [f"{t:.3g}" for t in ticks]

    left = 12 + line + 6 + max(text_width(t, face) for t in tick_labels) + 6
    right = 12
    plot_top = 8 + (line_height(title_face) + 8 if title else 0) + 2 * (line + 2)
    plot_bottom = height - (line + 12)
    plot_w, plot_h = width - left - right, plot_bottom - plot_top
    if plot_w < 20 or plot_h < 20:
        raise ValueError(f"{width}x{height} leaves no room for the bars")

    def y_of(v: float) -> float:
        return plot_top + (high - v) / (high - low) * plot_h

    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw_centered(draw, width / 2, 8, fit_text(title, title_face, width - 16), title_face)

    order = np.argsort(-data, kind="stable")[:top]
    highlighted = set(order.tolist())
    step = plot_w / count
    gap = 1 if step >= 3 else 0
    base = y_of(0.0)
    spans = []
    for i, v in enumerate(data.tolist()):
        x0 = left + round(i * step)
        x1 = max(x0, left + round((i + 1) * step) - 1 - gap)
        y = y_of(v)
        spans.append((x0, x1, min(y, base)))
        if i not in highlighted:
            draw.rectangle((x0, round(min(y, base)), x1, round(max(y, base))), fill=BAR)
    for i in sorted(highlighted):  # drawn last, so that no neighbour covers them
        x0, x1, y = spans[i]
        draw.rectangle((x0, round(y), x1, round(max(y_of(float(data[i])), base))), fill=TOP_BAR)

    draw.line((left, round(base), left + plot_w, round(base)), fill=AXIS)
    draw.line((left, plot_top, left, plot_bottom), fill=AXIS)
    for value, label in zip(ticks, tick_labels, strict=True):
        y = round(y_of(value))
        draw.line((left - 4, y, left, y), fill=AXIS)
        draw.text((left - 6 - text_width(label, face), y - line // 2), label, fill=TEXT, font=face)
    draw_centered(draw, left + plot_w / 2, plot_bottom + 6, f"channel (0-{count - 1})", face)
    axis_name = Image.new("RGB", (text_width("mean activation", face) + 2, line + 2), "white")
    ImageDraw.Draw(axis_name).text((1, 1), "mean activation", fill=TEXT, font=face)
    rotated = axis_name.rotate(90, expand=True)
    canvas.paste(rotated, (8, max(0, round(plot_top + plot_h / 2 - rotated.height / 2))))

    placed: list[tuple[float, float, float]] = []
    for i in order.tolist():  # highest first; a label that would overlap one moves up a line
        x0, x1, y = spans[i]
        label = str(i)
        half = text_width(label, face) / 2 + 1
        center = min(max((x0 + x1) / 2, left + half), width - half)
        label_top = y - line - 3
        while any(abs(center - c) < half + h and abs(label_top - t) < line for c, h, t in placed):
            label_top -= line + 1
        label_top = max(0.0, label_top)
        placed.append((center, half, label_top))
        draw_centered(draw, center, label_top, label, face)
    return canvas
