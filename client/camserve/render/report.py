"""A self-contained HTML report: images inlined as PNG data URIs, inline CSS, nothing fetched."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Final

from camserve.render.images import ImageLike, to_pil

_CSS: Final = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #202020; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 16px; }
section { background: #fff; border: 1px solid #ddd; border-radius: 6px;
  padding: 12px 16px; margin-bottom: 20px; }
h2 { font-size: 17px; margin: 0 0 10px; word-break: break-all; }
.row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; text-align: center; }
figure img { max-width: 240px; max-height: 240px; display: block; image-rendering: auto; }
figcaption { font-size: 13px; margin-top: 4px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { text-align: left; padding: 2px 8px; }
td.p { font-variant-numeric: tabular-nums; white-space: nowrap; }
.bar { display: inline-block; width: 120px; height: 9px; background: #eee;
  margin-right: 6px; vertical-align: middle; }
.bar span { display: block; height: 100%; background: #d62728; }
"""


@dataclass(frozen=True)
class ReportEntry:
    """One image in a report: its name, top predictions (label, probability), and overlays."""

    name: str
    image: ImageLike
    predictions: Sequence[tuple[str, float]] = ()
    overlays: Mapping[str, ImageLike] = field(default_factory=dict)


def png_data_uri(image: ImageLike) -> str:
    """``image`` as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(image: ImageLike, caption: str, alt: str) -> str:
    return (
        f'<figure><img src="{png_data_uri(image)}" alt="{escape(alt)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _predictions(predictions: Sequence[tuple[str, float]]) -> str:
    if not predictions:
        return ""
    rows = []
    for label, probability in predictions:
        share = min(max(float(probability), 0.0), 1.0) * 100.0
        rows.append(
            f'<tr><td>{escape(str(label))}</td><td class="p"><span class="bar">'
            f'<span style="width: {share:.1f}%"></span></span>{float(probability) * 100:.1f}%'
            "</td></tr>"
        )
    return (
        "<table><thead><tr><th>label</th><th>probability</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _entry(entry: ReportEntry) -> str:
    parts = [f"<section><h2>{escape(entry.name)}</h2>", '<div class="row">']
    parts.append(_figure(entry.image, "input", f"{entry.name}: input"))
    parts.append(_predictions(entry.predictions))
    parts.append("</div>")
    if entry.overlays:
        parts.append('<div class="row">')
        parts += [
            _figure(image, method, f"{entry.name}: {method}")
            for method, image in entry.overlays.items()
        ]
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def html_report(entries: Iterable[ReportEntry], *, title: str = "camserve report") -> str:
    """A self-contained HTML page with, for each entry, its image, predictions and overlays."""
    body = [_entry(entry) for entry in entries] or ["<p>No entries.</p>"]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{escape(title)}</h1>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )
