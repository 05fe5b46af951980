"""How an ``Explanation`` shows itself in a notebook (``_repr_png_``, ``_repr_html_``):
its heatmaps coloured side by side, each under its caption. Pillow and numpy only."""

from __future__ import annotations

import base64
import io
from html import escape
from typing import TYPE_CHECKING, Final

from PIL import Image

from camserve.render.colormaps import apply_colormap
from camserve.render.images import for_display
from camserve.render.panels import caption

if TYPE_CHECKING:
    from camserve.results import Explanation

NOTEBOOK_SIDE: Final = 256  # pixels on a heatmap's longer side (at least)
GAP: Final = 8


def _coloured(explanation: Explanation) -> list[Image.Image]:
    return [
        for_display(Image.fromarray(apply_colormap(heatmap, "jet")), NOTEBOOK_SIDE)
        for heatmap in explanation.heatmaps
    ]


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def heatmaps_png(explanation: Explanation) -> bytes:
    """The heatmaps in jet, side by side on white, as PNG bytes."""
    tiles = _coloured(explanation)
    width = sum(t.width for t in tiles) + GAP * (len(tiles) - 1)
    canvas = Image.new("RGB", (width, max(t.height for t in tiles)), (255, 255, 255))
    left = 0
    for tile in tiles:
        canvas.paste(tile, (left, 0))
        left += tile.width + GAP
    return _png(canvas)


def explanation_html(explanation: Explanation) -> str:
    """Each heatmap (jet: blue 0, red 1 = the map's maximum) over its caption, in a row."""
    figures = []
    for index, tile in enumerate(_coloured(explanation)):
        source = base64.b64encode(_png(tile)).decode("ascii")
        figures.append(
            '<figure style="margin:0 8px 0 0;display:inline-block;text-align:center">'
            f'<img src="data:image/png;base64,{source}" width="{tile.width}">'
            f"<figcaption>{escape(caption(explanation, index))}</figcaption></figure>"
        )
    timings = explanation.timings
    note = (
        f"model {escape(explanation.model)}, layer {escape(explanation.layer or '-')}, "
        f"{timings.total_ms:.0f} ms{', cache hit' if explanation.cache_hit else ''}; "
        "jet: blue = 0, red = the map's maximum"
    )
    return f'<div>{"".join(figures)}<div style="font-size:smaller">{note}</div></div>'


__all__ = ["explanation_html", "heatmaps_png"]
