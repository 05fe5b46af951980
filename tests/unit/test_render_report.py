"""The HTML report: captioned maps with colour scales in a grid as wide as the page,
compressed JPEG pictures at a readable size, an index for many images, and pictures
beside the page on request; self-contained and escaped."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from explanations import explanation
from PIL import Image

from camserve import render

pytest.importorskip("jinja2")


class _Page(HTMLParser):
    """The ``<img>`` attributes, the classes used, and the ids of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.classes: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images.append(found)
        if tag == "a" and found.get("href"):
            self.links.append(found["href"] or "")
        self.classes += (found.get("class") or "").split()


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def _decoded(source: str) -> Image.Image:
    kind, _, data = source.partition(";base64,")
    assert kind in ("data:image/jpeg", "data:image/png")
    return Image.open(io.BytesIO(base64.b64decode(data)))


def _entries(
    count: int, methods: tuple[str, ...] = ("gradcam", "occlusion")
) -> list[render.ReportEntry]:
    entries = []
    for i in range(count):
        yy, xx = np.mgrid[0 : 60 + i, 0:64]
        shade = [xx * 4, yy * 4, np.hypot(xx - 32, yy - 30) * 6]
        image = np.clip(np.stack(shade, axis=2), 0, 255).astype(np.uint8)  # a smooth picture
        panels = []
        for method in methods:
            ex = explanation(method, size=(60 + i, 64))
            panels += render.explanation_panels(image, ex)
        entries.append(
            render.ReportEntry(
                name=f"<img {i}> & co",
                image=image,
                predictions=[("tabby <cat>", 0.8), ("tiger cat", 0.15)],
                panels=panels if i else [],
                problems=["smoothgrad: DEADLINE_EXCEEDED: slow"] if i == 2 else [],
            )
        )
    return entries


def test_report_is_self_contained_escaped_and_compressed() -> None:
    page = render.html_report(_entries(3), title="report <1>", summary="model demo")
    parsed = _parse(page)
    assert len(parsed.images) == 3 + 2 * 2  # three inputs; two maps for two of the entries
    assert page.count("<figure>") == len(parsed.images)
    for attributes in parsed.images:
        picture = _decoded(attributes["src"] or "")
        width, height = int(attributes["width"] or 0), int(attributes["height"] or 0)
        assert min(width, height) >= 224  # small pictures shown enlarged to a readable size
        factor = width // picture.width  # by a whole factor, pixels kept sharp
        assert (width, height) == (picture.width * factor, picture.height * factor)
        assert factor > 1 and attributes["class"] == "pixelated"
        assert max(picture.size) < 100  # stored at their own size: small
    lowered = page.lower()
    for absent in ("http://", "https://", "<link", "<script"):
        assert absent not in lowered
    assert "&lt;img 0&gt; &amp; co" in page
    assert "tabby &lt;cat&gt;" in page
    assert "<title>report &lt;1&gt;</title>" in page
    assert "80.0%" in page
    assert "smoothgrad: DEADLINE_EXCEEDED: slow" in page
    assert "grid-template-columns: repeat(auto-fill" in page  # the page's width as a grid


def test_every_map_has_its_caption_and_colour_scale() -> None:
    page = render.html_report(_entries(2))
    parsed = _parse(page)
    assert parsed.classes.count("scale") == 2
    assert parsed.classes.count("ramp") == 2
    assert "gradcam · triangle · p = 0.93" in page
    assert "occlusion · triangle · p = 0.93" in page
    assert "relevance to the class" in page
    assert page.count("linear-gradient(to right, rgb(0,0,127) 0%") == 2  # jet, 0 = dark blue
    assert ">0 none<" in page and ">1 most<" in page


def test_many_images_get_an_index() -> None:
    few = _parse(render.html_report(_entries(3)))
    assert not any(link.startswith("#image-") for link in few.links)
    many = _parse(render.html_report(_entries(render.report.INDEX_AFTER + 1, ("gradcam",))))
    anchors = [link for link in many.links if link.startswith("#image-")]
    assert anchors == [f"#image-{k}" for k in range(1, render.report.INDEX_AFTER + 2)]


def test_report_size_stays_small(tmp_path: Path) -> None:
    entries = _entries(12)
    page = render.write_report(tmp_path / "r.html", entries)
    per_picture = page.stat().st_size / (12 + 11 * 2)
    assert per_picture < 15_000


def test_large_pictures_are_reduced_jpeg_thumbnails() -> None:
    yy, xx = np.mgrid[0:900, 0:1200]
    photo = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=2).astype(np.uint8)
    page = render.html_report([render.ReportEntry("photo", photo)], side=320)
    (attributes,) = _parse(page).images
    picture = _decoded(attributes["src"] or "")
    assert picture.format == "JPEG"
    assert picture.size == (320, 240)
    assert (attributes["width"], attributes["height"]) == ("320", "240")
    assert not attributes.get("class")


def test_pictures_beside_the_page(tmp_path: Path) -> None:
    target = render.write_report(tmp_path / "out" / "report.html", _entries(3), images_beside=True)
    page = target.read_text()
    parsed = _parse(page)
    sources = [a["src"] or "" for a in parsed.images]
    assert all(s.startswith("report_files/") for s in sources)
    assert len(set(sources)) == len(sources)
    for source in sources:
        with Image.open(target.parent / source) as picture:
            assert picture.format == {".jpg": "JPEG", ".png": "PNG"}[Path(source).suffix]
    assert target.stat().st_size < 20_000


def test_report_without_entries() -> None:
    page = render.html_report([])
    assert page.startswith("<!DOCTYPE html>")
    assert "<img" not in page
    assert "No entries." in page


def test_report_without_jinja2_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "jinja2", None)
    with pytest.raises(ImportError, match=r"pip install 'camserve\[plots\]'"):
        render.html_report([])
