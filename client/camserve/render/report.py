"""An HTML report: per image, its predictions and captioned maps with colour scales, laid
out in a grid as wide as the page, with an index when it holds many images.

Pictures are compressed and inlined as data URIs (one self-contained file: nothing
is fetched), or written into a folder beside the page (``write_report(...,
images_beside=True)``). A picture larger than the display size is reduced to it and
stored as JPEG; a smaller one is stored at its own size, as PNG or JPEG, whichever
is smaller, and enlarged by the browser without smoothing (``image-rendering:
pixelated``) to the same whole factor ``images.for_display`` uses. The page is a
jinja2 template (the ``plots`` extra; see ``_templates``).
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from PIL import Image

from camserve.render._templates import require_jinja2, template
from camserve.render.colormaps import colormap_lut
from camserve.render.images import ImageLike, enlargement, reduced, to_pil
from camserve.render.panels import DISPLAY_SIDE, ColourScale, Panel

INDEX_AFTER: Final = 8  # a report with more images than this gets an index
JPEG_QUALITY: Final = 85
GRADIENT_STOPS: Final = 11

ImageWriter = Callable[[bytes, str, str], str]
"""``write(data, stem, suffix)`` stores an encoded picture (``suffix`` ".jpg" or ".png")
and returns the ``src`` that shows it."""
MIME: Final = {".jpg": "image/jpeg", ".png": "image/png"}


@dataclass(frozen=True)
class ReportEntry:
    """One image in a report: its name, top predictions (label, probability), its maps
    as panels, and the problems met explaining it (one line each)."""

    name: str
    image: ImageLike
    predictions: Sequence[tuple[str, float]] = ()
    panels: Sequence[Panel] = ()
    problems: Sequence[str] = field(default_factory=tuple)


def jpeg_bytes(picture: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """``picture`` as JPEG, colour kept at full resolution (no chroma subsampling)."""
    buffer = io.BytesIO()
    picture.convert("RGB").save(
        buffer, format="JPEG", quality=quality, subsampling=0, optimize=True
    )
    return buffer.getvalue()


def encoded(picture: Image.Image, exact: bool) -> tuple[bytes, str]:
    """``picture`` compressed, and its suffix: JPEG, or with ``exact`` (a small picture
    the browser enlarges, whose pixels show) the smaller of PNG and JPEG."""
    jpeg = jpeg_bytes(picture)
    if not exact:
        return jpeg, ".jpg"
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="PNG", optimize=True)
    png = buffer.getvalue()
    return (png, ".png") if len(png) <= len(jpeg) else (jpeg, ".jpg")


def inline(data: bytes, stem: str, suffix: str) -> str:
    """An ``ImageWriter``: the picture as a ``data:`` URI in the page."""
    return f"data:{MIME[suffix]};base64," + base64.b64encode(data).decode("ascii")


def png_data_uri(image: ImageLike) -> str:
    """``image`` as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class ImagesBeside:
    """An ``ImageWriter`` that saves JPEG files into ``folder`` and links them relative to
    the page's folder ``page_folder``."""

    def __init__(self, folder: Path, page_folder: Path) -> None:
        self.folder = folder
        self.prefix = Path(os.path.relpath(folder, page_folder)).as_posix()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.used: set[str] = set()

    def __call__(self, data: bytes, stem: str, suffix: str) -> str:
        name, n = f"{stem}{suffix}", 1
        while name in self.used:
            n += 1
            name = f"{stem}-{n}{suffix}"
        self.used.add(name)
        (self.folder / name).write_bytes(data)
        return f"{self.prefix}/{name}"


def css_gradient(colormap: str) -> str:
    """A CSS ``linear-gradient`` left to right through ``colormap``."""
    lut = colormap_lut(colormap)
    stops = []
    for k in range(GRADIENT_STOPS):
        share = k / (GRADIENT_STOPS - 1)
        r, g, b = (int(c) for c in lut[round(share * (len(lut) - 1))])
        stops.append(f"rgb({r},{g},{b}) {share * 100:.0f}%")
    return f"linear-gradient(to right, {', '.join(stops)})"


def _scale(scale: ColourScale) -> dict[str, Any]:
    if scale.colormap is None:
        return {"gradient": "", "ticks": [], "label": scale.label}
    span = scale.high - scale.low or 1.0
    ticks = []
    for value, text in scale.ticks:
        left = (value - scale.low) / span * 100.0
        edge = "first" if left <= 0.0 else "last" if left >= 100.0 else ""
        ticks.append({"left": f"{left:.1f}", "text": text, "edge": edge})
    return {"gradient": css_gradient(scale.colormap), "ticks": ticks, "label": scale.label}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "image"


def _picture(picture: Image.Image, side: int, stem: str, write: ImageWriter) -> dict[str, Any]:
    """What the template shows of ``picture``: its ``src``, display size and class."""
    stored = reduced(picture, side)
    factor = enlargement(stored.size, side)
    data, suffix = encoded(stored, exact=factor > 1)
    return {
        "src": write(data, stem, suffix),
        "width": stored.width * factor,
        "height": stored.height * factor,
        "class": "pixelated" if factor > 1 else "",
    }


def _entry(entry: ReportEntry, number: int, write: ImageWriter, side: int) -> dict[str, Any]:
    slug = f"{number:03d}-{_slug(entry.name)}"
    figures = []
    for k, panel in enumerate(entry.panels):
        figure = _picture(panel.native, side, f"{slug}-{k}-{_slug(panel.method)}", write)
        figure |= {
            "caption": panel.caption,
            "alt": f"{entry.name}: {panel.method}, class {panel.target}",
            "scale": _scale(panel.scale),
        }
        figures.append(figure)
    predictions = [
        {
            "label": str(label),
            "share": f"{min(max(float(p), 0.0), 1.0) * 100:.1f}",
            "percent": f"{float(p) * 100:.1f}%",
        }
        for label, p in entry.predictions
    ]
    return {
        "id": f"image-{number}",
        "name": entry.name,
        "input": _picture(to_pil(entry.image), side, f"{slug}-input", write),
        "predictions": predictions,
        "figures": figures,
        "problems": list(entry.problems),
    }


def html_report(
    entries: Iterable[ReportEntry],
    *,
    title: str = "camserve report",
    summary: str = "",
    images: ImageWriter = inline,
    side: int = DISPLAY_SIDE,
    index_after: int = INDEX_AFTER,
) -> str:
    """The report page: each entry's input (``side`` pixels on its longer edge), its
    predictions and its panels; an index of links when there are more than
    ``index_after`` entries. ``images`` stores each picture (default: inline JPEG)."""
    page_template = template("report.html.j2")
    rows = [_entry(entry, k + 1, images, side) for k, entry in enumerate(entries)]
    page: str = page_template.render(
        title=title, summary=summary, entries=rows, index=len(rows) > index_after
    )
    return page


def write_report(
    path: Path,
    entries: Iterable[ReportEntry],
    *,
    title: str = "camserve report",
    summary: str = "",
    images_beside: bool = False,
) -> Path:
    """Write the report to ``path``; with ``images_beside``, its pictures go into the
    folder ``<path stem>_files`` next to it instead of into the page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write: ImageWriter = inline
    if images_beside:
        folder = path.parent / f"{path.stem}_files"
        write = ImagesBeside(folder.resolve(), path.parent.resolve())
    page = html_report(entries, title=title, summary=summary, images=write)
    path.write_text(page, encoding="utf-8")
    return path


__all__ = [
    "INDEX_AFTER",
    "ImageWriter",
    "ImagesBeside",
    "ReportEntry",
    "css_gradient",
    "encoded",
    "html_report",
    "inline",
    "jpeg_bytes",
    "png_data_uri",
    "require_jinja2",
    "write_report",
]
