"""``camserve.render`` panels and figures: each map at a readable size, captioned with its
method, class and probability, with a colour scale; signed attributions as Captum shows
them, gradients as pytorch-grad-cam's RGB image."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from explanations import explanation
from PIL import Image

from camserve import render
from camserve.render import attributions, panels


def _image(height: int = 64, width: int = 64) -> Image.Image:
    pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# --- attributions ----------------------------------------------------------------------


def test_signed_map_matches_captums_normalisation() -> None:
    captum = pytest.importorskip("captum.attr._utils.visualization")
    rng = np.random.default_rng(2)
    attribution = rng.standard_normal((3, 20, 30)) ** 3  # heavy tails: outliers to clip
    for outlier in (0.0, 2.0, 10.0):
        expected = captum._normalize_attr(attribution.sum(axis=0), "all", outlier)
        got = attributions.signed_map(attribution, outlier)
        np.testing.assert_allclose(got, expected, atol=1e-6)
    magnitude = np.abs(attribution)
    expected = captum._normalize_attr(magnitude.sum(axis=0), "absolute_value", 2.0)
    got = attributions.signed_map(magnitude, 2.0, "absolute_value")
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_signed_map_keeps_zero_at_zero_and_clips_the_outliers() -> None:
    attribution = np.zeros((3, 100, 100))
    attribution[:, 50:, :] = -0.5
    attribution[:, :20, 50:] = 0.25
    attribution[0, 0, 0] = 100.0  # one outlier: under 2% of the total |attribution|
    values = attributions.signed_map(attribution, 2.0)
    assert values[0, 0] == 1.0  # clipped
    assert values[30, 30] == 0.0
    assert values[70, 70] == pytest.approx(-1.0)  # the mass of the map, not the outlier, sets 1
    assert values[10, 70] == pytest.approx(0.5)
    assert attributions.signed_map(np.zeros((3, 4, 4))).max() == 0.0
    with pytest.raises(ValueError, match="outlier_perc"):
        attributions.outlier_threshold(np.ones(4), 100.0)


def test_gradient_image_is_pytorch_grad_cams_deprocess_image() -> None:
    image_utils = pytest.importorskip("pytorch_grad_cam.utils.image")
    gradient = np.random.default_rng(3).standard_normal((3, 16, 12)).astype(np.float32)
    expected = image_utils.deprocess_image(gradient.transpose(1, 2, 0))
    np.testing.assert_array_equal(attributions.gradient_image(gradient), expected)
    flat = attributions.gradient_image(np.zeros((3, 4, 4)))
    assert set(np.unique(flat).tolist()) == {127}  # no gradient: mid-grey


def test_for_display_enlarges_by_a_whole_factor_with_sharp_pixels() -> None:
    small = _image(64, 48)
    shown = render.for_display(small, 320)
    assert shown.size == (240, 320)  # x5: the longer side reaches 320
    np.testing.assert_array_equal(np.asarray(shown)[::5, ::5], np.asarray(small))
    large = render.for_display(_image(1000, 500), 320)
    assert large.size == (160, 320)
    assert render.for_display(_image(320, 100), 320).size == (100, 320)


# --- panels ----------------------------------------------------------------------------


def test_a_heatmap_panel_is_captioned_scaled_and_readable() -> None:
    (panel,) = render.explanation_panels(_image(), explanation("gradcam"))
    assert panel.caption == "gradcam · triangle · p = 0.93"
    assert min(panel.picture.size) >= 224
    assert panel.native.size == (64, 64)  # as drawn; panel.picture enlarges it x5
    assert panel.scale.colormap == "jet"
    assert (panel.scale.low, panel.scale.high) == (0.0, 1.0)
    assert "relevance" in panel.scale.label
    assert panel.scale.ticks[0][1].startswith("0")


def test_captions_name_each_target_and_bound_an_unlisted_probability() -> None:
    ex = explanation("gradcam", targets=(2, 3))
    first, second = render.explanation_panels(_image(), ex)
    assert first.caption == "gradcam · triangle · p = 0.93"
    assert second.caption == "gradcam · cross · p ≤ 0.05"
    tiny = explanation("gradcam", scores=((2, 3.2e-5), (0, 0.9)))
    assert panels.class_caption(tiny, 0) == "triangle · p = 3e-05"
    empty = dataclasses.replace(ex, empty=[True, False])
    assert panels.caption(empty, 0).endswith("(empty: nothing positive)")


def test_a_signed_attribution_is_diverging_and_centred_on_zero() -> None:
    raw = np.zeros((1, 3, 64, 64), np.float32)
    raw[0, :, :, :32] = -1.0
    raw[0, :, :, 32:] = 1.0
    raw[0, :, 30:34, :] = 0.0
    gray = Image.new("RGB", (64, 64), (128, 128, 128))
    (panel,) = render.explanation_panels(gray, explanation("input_x_gradient", raw=raw))
    assert panel.scale.colormap == "bwr"
    assert (panel.scale.low, panel.scale.high) == (-1.0, 1.0)
    assert [text for _, text in panel.scale.ticks] == ["-1 against", "0", "+1 for"]
    assert "2%" in panel.scale.label
    pixels = np.asarray(panel.picture).astype(int)
    factor = panel.picture.width // 64
    left, right, middle = (
        pixels[10 * factor, 5 * factor],
        pixels[10 * factor, 60 * factor],
        (pixels[32 * factor, 5 * factor]),
    )
    assert left[2] > left[0] + 60  # blue: against
    assert right[0] > right[2] + 60  # red: for
    assert abs(middle[0] - middle[2]) < 3  # zero: white over grey, no hue


def test_a_magnitude_is_sequential_and_gradients_show_as_rgb() -> None:
    raw = np.abs(np.random.default_rng(4).standard_normal((1, 3, 32, 32))).astype(np.float32)
    (saliency,) = render.explanation_panels(_image(), explanation("saliency", raw=raw))
    assert saliency.scale.colormap == "jet"
    assert "none negative" in saliency.scale.label
    signed = raw - raw.mean()
    (guided,) = render.explanation_panels(_image(), explanation("guided_backprop", raw=signed))
    assert guided.scale.colormap is None
    assert "RGB gradient" in guided.scale.label
    expected = render.for_display(Image.fromarray(attributions.gradient_image(signed[0])), 320)
    np.testing.assert_array_equal(np.asarray(guided.picture), np.asarray(expected))


def test_views_follow_the_method_and_its_raw() -> None:
    cam_raw = np.zeros((1, 7, 7), np.float32)
    assert panels.view_of("gradcam", None) == "heatmap"
    assert panels.view_of("gradcam", cam_raw) == "heatmap"
    signed = np.array([-1.0, 1.0], np.float32).reshape(1, 1, 1, 2).repeat(3, axis=1)
    assert panels.view_of("occlusion", signed) == "signed"
    assert panels.view_of("saliency", np.abs(signed)) == "magnitude"
    for method in ("guided_backprop", "deconvnet", "guided_gradcam"):
        assert panels.view_of(method, signed) == "gradient"


# --- figures ---------------------------------------------------------------------------


def _ink_rows(picture: Image.Image) -> npt.NDArray[Any]:
    pixels = np.asarray(picture).astype(int)
    return np.flatnonzero((pixels.sum(axis=2) < 200).any(axis=1))


def test_panels_figure_puts_captions_above_and_scales_below() -> None:
    pytest.importorskip("matplotlib")
    ex = explanation("gradcam", targets=(2, 3))
    figure = render.panels_figure(
        render.explanation_panels(_image(), ex),
        title="sample",
        image=render.for_display(_image(), 320),
    )
    assert figure.width >= 3 * 320
    assert figure.height >= 320 + 60
    assert _ink_rows(figure).size > 20  # title, captions and tick labels


def test_feature_maps_and_filters_figures_are_labelled_tiles() -> None:
    pytest.importorskip("matplotlib")
    maps = np.random.default_rng(5).random((6, 8, 8)).astype(np.float32)
    grid = render.feature_maps_figure(maps, [40, 3, 17, 8, 1, 22], title="strongest", columns=3)
    assert grid.width > 3 * 72 and grid.height > 2 * 72
    filters = np.random.default_rng(6).standard_normal((70, 3, 7, 7)).astype(np.float32)
    tiles = render.filters_figure(filters, title="conv1")
    assert tiles.width > 8 * 56
    with pytest.raises(ValueError, match="labels"):
        render.tiles_figure(
            [np.zeros((4, 4, 3), np.uint8)], [], title="x", scale=panels.GRADIENT_SCALE
        )


def test_figures_without_matplotlib_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install 'camserve\[plots\]'"):
        render.channel_profile_chart(np.ones(4))
    assert not render.has_matplotlib()
