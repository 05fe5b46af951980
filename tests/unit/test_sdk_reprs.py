"""SDK results print short (shapes and key fields, never arrays or bytes), and the ones
that are pictures show themselves in a notebook."""

from __future__ import annotations

import io

import numpy as np
from explanations import explanation
from PIL import Image

from camserve.jobs import VisualImage, VisualizationProgress, VisualizationResult
from camserve.results import Activations, ClassScore, Filters, ModelInfo
from camserve.sets import ActivatingPatch, EmbeddingMap, Neighbour

PNG = b"\x89PNG\r\n\x1a\n"


def _png(size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _short(text: str, limit: int = 400) -> str:
    assert len(text) < limit, text
    assert "array(" not in text and "\\x" not in text, text
    return text


def test_explanation_repr_names_shapes_and_the_top_class() -> None:
    ex = explanation("gradcam", targets=(2, 3), size=(300, 400))
    text = _short(repr(ex))
    assert "heatmaps=float32 (2, 300, 400)" in text
    assert "method='gradcam'" in text and "top='triangle 0.930'" in text
    assert "targets=[2, 3]" in text and "raw=None" in text


def test_explanation_shows_itself_in_a_notebook() -> None:
    ex = explanation("gradcam", targets=(2, 3), size=(64, 48))
    png = ex._repr_png_()
    assert png is not None and png.startswith(PNG)
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.height >= 256  # enlarged to a readable size
        assert picture.width > 2 * 192  # the two maps side by side
    html = ex._repr_html_()
    assert html is not None
    assert "gradcam · triangle · p = 0.93" in html and "gradcam · cross" in html
    assert html.count("<img") == 2
    classless = explanation("feature_maps", targets=())
    assert classless._repr_png_() is None and classless._repr_html_() is None


def test_explanation_overlay_is_the_images_size() -> None:
    ex = explanation("gradcam", size=(30, 40))
    picture = ex.overlay(np.zeros((30, 40, 3), np.uint8))
    assert picture.size == (40, 30)


def test_activations_filters_and_models_repr_short() -> None:
    maps = np.random.default_rng(0).random((4, 6, 6)).astype(np.float32)
    found = Activations("features", maps, [7, 1, 3, 9], np.zeros(64, np.float32))
    text = _short(repr(found))
    assert "maps=float32 (4, 6, 6)" in text and "profile=float32 (64,)" in text
    assert (found._repr_png_() or b"").startswith(PNG)
    weights = Filters("conv1", np.zeros((16, 3, 3, 3), np.float32))
    assert "weights=float32 (16, 3, 3, 3)" in _short(repr(weights))
    assert weights._repr_png_().startswith(PNG)
    labels = [f"class {i}" for i in range(1000)]
    model = ModelInfo("r18", ["layer4"], "layer4", (224, 224), 1000, labels, ["gradcam"])
    assert "... (1000 in all)" in _short(repr(model))
    assert repr(ClassScore(3, "cat", 0.5, 1.0)) == "ClassScore(3, 'cat', p=0.5)"


def test_job_results_repr_short_and_show_their_image() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    result = VisualizationResult(
        model="demo",
        method="deepdream",
        layer="features",
        tensor=np.zeros((3, 32, 32), np.float32),
        image=image,
        scores=[ClassScore(1, "square", 0.7, 2.0)],
        trace=np.zeros(100),
        images={"original": VisualImage("original", None, image)},
    )
    text = _short(repr(result))
    assert "image=uint8 (32, 32, 3)" in text and "images=['original']" in text
    assert result._repr_png_().startswith(PNG)
    assert result.images["original"]._repr_png_().startswith(PNG)
    step = VisualizationProgress(3, 10, 0.5, 0.4, 12.0, preview=image)
    assert "preview=uint8 (32, 32, 3)" in _short(repr(step))
    assert (step._repr_png_() or b"").startswith(PNG)


def test_set_results_repr_short_and_show_their_pictures() -> None:
    patch = ActivatingPatch("a.png", 2.5, (1, 2), (0, 0, 16, 16), _png(), 3, "cross", "f", 7)
    text = _short(repr(patch))
    assert "patch_png=<PNG," in text
    assert patch._repr_png_().startswith(PNG)
    neighbour = Neighbour("b.png", 0.1, 2, "triangle", _png())
    assert neighbour._repr_png_() is not None
    assert Neighbour("c.png", 0.2, 1, "square")._repr_png_() is None
    mapped = EmbeddingMap(
        ids=[f"{i}.png" for i in range(50)],
        xy=np.zeros((50, 2), np.float32),
        classes=np.zeros(50, np.int64),
        labels=[],
        method="pca",
        projected=50,
        thumbnails_png=[_png()] * 50,
    )
    text = _short(repr(mapped), 600)
    assert "xy=float32 (50, 2)" in text and "(50 in all)" in text
