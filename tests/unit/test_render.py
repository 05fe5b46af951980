"""``camserve.render``: colour maps, overlays, grids, charts and embeddings (the report and
the panels: ``test_render_report.py``, ``test_render_panels.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from camserve import render

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"


def _blob(
    shape: tuple[int, int], center: tuple[float, float], sigma: float
) -> npt.NDArray[np.float64]:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    blob = np.exp(-((yy - center[0]) ** 2 + (xx - center[1]) ** 2) / (2 * sigma**2))
    peak: np.float64 = blob.max()
    return np.asarray(blob / peak, dtype=np.float64)


def _gray_image(height: int, width: int, level: int = 128) -> Image.Image:
    return Image.new("RGB", (width, height), (level, level, level))


# --- colour maps -----------------------------------------------------------------------


def test_jet_endpoints_are_dark_blue_and_dark_red() -> None:
    lut = render.colormap_lut("jet")
    assert lut.shape == (256, 3)
    assert lut.dtype == np.uint8
    assert tuple(lut[0]) == (0, 0, 127)
    assert tuple(lut[-1]) == (127, 0, 0)
    np.testing.assert_array_equal(render.apply_colormap(np.array([[0.0, 1.0]])), lut[[0, -1]][None])


def test_jet_is_piecewise_monotonic() -> None:
    lut = render.colormap_lut("jet").astype(int)
    red, green, blue = lut[:, 0], lut[:, 1], lut[:, 2]
    # Red rises until 0.89 then falls; blue rises until 0.11 then falls; green is one hump.
    assert np.all(np.diff(red[: int(0.89 * 255)]) >= 0)
    assert np.all(np.diff(red[int(0.89 * 255) + 1 :]) <= 0)
    assert np.all(np.diff(blue[: int(0.11 * 255)]) >= 0)
    assert np.all(np.diff(blue[int(0.11 * 255) + 1 :]) <= 0)
    peak = int(np.argmax(green))
    assert np.all(np.diff(green[: peak + 1]) >= 0)
    assert np.all(np.diff(green[peak:]) <= 0)
    assert green[0] == green[-1] == 0
    # Blue, then cyan, then yellow, then red, in that order.
    cyan = np.flatnonzero((lut[:, 1] > 200) & (lut[:, 2] > 200))
    yellow = np.flatnonzero((lut[:, 0] > 200) & (lut[:, 1] > 200))
    assert cyan.size and yellow.size
    assert cyan.max() < yellow.min()


@pytest.mark.parametrize("name", render.COLORMAP_NAMES)
def test_colormaps_match_matplotlib(name: str) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    values = np.linspace(0.0, 1.0, 4097).reshape(1, -1)
    expected = matplotlib.colormaps[name](values, bytes=True)[..., :3].astype(int)
    got = render.apply_colormap(values, name).astype(int)
    tolerance = 0 if name in ("jet", "gray") else 1 if name == "bwr" else 2
    assert np.abs(expected - got).max() <= tolerance


def test_unknown_colormap_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown colormap") as info:
        render.apply_colormap(np.zeros((2, 2)), "no-such-map")
    for name in render.COLORMAP_NAMES:
        assert name in str(info.value)
    assert "matplotlib" in str(info.value)
    assert not render.is_colormap("no-such-map")


def test_matplotlib_colormaps_are_accepted_where_it_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    lut = render.colormap_lut("magma")
    np.testing.assert_array_equal(lut[-1], matplotlib.colormaps["magma"](1.0, bytes=True)[:3])
    assert render.is_colormap("RdBu_r")
    render.colormaps._matplotlib_lut.cache_clear()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    try:
        assert render.is_colormap("jet")  # built in
        assert not render.is_colormap("magma")
    finally:
        render.colormaps._matplotlib_lut.cache_clear()


def test_bwr_is_white_at_zero_blue_below_red_above() -> None:
    lut = render.colormap_lut("bwr").astype(int)
    assert tuple(lut[0]) == (0, 0, 255)
    assert tuple(lut[-1]) == (255, 0, 0)
    assert min(lut[127]) > 250 and min(lut[128]) > 250


def test_apply_colormap_clips_and_treats_nan_as_zero() -> None:
    lut = render.colormap_lut("viridis")
    out = render.apply_colormap(np.array([[-3.0, np.nan, 7.0]]), "viridis")
    np.testing.assert_array_equal(out[0], lut[[0, 0, 255]])
    with pytest.raises(ValueError, match="2-D"):
        render.apply_colormap(np.zeros(5))


# --- images and overlays ---------------------------------------------------------------


def test_to_pil_accepts_every_image_like(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 256, (12, 9, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(array).save(path)
    encoded = path.read_bytes()
    for source in (array, path, str(path), encoded, Image.fromarray(array).convert("RGBA")):
        image = render.to_pil(source)
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), array)
    gray = render.to_pil(array[:, :, 0])
    np.testing.assert_array_equal(np.asarray(gray), np.repeat(array[:, :, :1], 3, axis=2))


def test_to_pil_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        render.to_pil(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="H, W"):
        render.to_pil(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(TypeError):
        render.to_pil(42)  # type: ignore[arg-type]


def test_overlay_is_hottest_where_the_heatmap_peaks() -> None:
    image = _gray_image(96, 128)
    # A small heatmap, peaking in its top-right corner: resized to the image on the way.
    heat = _blob((12, 16), center=(1.5, 13.5), sigma=2.0)
    out = np.asarray(render.overlay(image, heat), dtype=int)
    assert out.shape == (96, 128, 3)
    hotness = out[:, :, 0] - out[:, :, 2]  # jet's hot end is red, its cold end blue
    y, x = np.unravel_index(int(np.argmax(hotness)), hotness.shape)
    assert y < 96 / 4
    assert x > 128 * 3 / 4
    assert hotness[y, x] > 50
    cold = hotness[80:, :32]
    assert cold.max() < 0


def test_overlay_blends_by_alpha() -> None:
    image = _gray_image(8, 8, level=100)
    heat = np.linspace(0, 1, 64).reshape(8, 8)
    colours = render.apply_colormap(heat, "inferno")
    np.testing.assert_array_equal(np.asarray(render.overlay(image, heat, "inferno", 0.0)), 100)
    np.testing.assert_array_equal(np.asarray(render.overlay(image, heat, "inferno", 1.0)), colours)
    half = np.asarray(render.overlay(image, heat, "inferno", 0.5), dtype=float)
    np.testing.assert_allclose(half, 0.5 * 100 + 0.5 * colours, atol=0.51)
    with pytest.raises(ValueError, match="alpha"):
        render.overlay(image, heat, alpha=1.5)


def test_resize_heatmap_is_bilinear_and_keeps_same_size() -> None:
    heat = np.array([[0.0, 1.0]], dtype=np.float32)
    same = render.resize_heatmap(heat, (2, 1))
    np.testing.assert_array_equal(same, heat)
    wide = render.resize_heatmap(heat[None], (8, 2))
    assert wide.shape == (2, 8)
    assert np.all(np.diff(wide[0]) >= 0)
    assert 0.0 <= wide.min() < wide.max() <= 1.0


# --- grids -----------------------------------------------------------------------------


def test_method_grid_size_and_panels() -> None:
    image = np.random.default_rng(1).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    heat = {"gradcam": _blob((7, 7), (1, 1), 1.5), "saliency": _blob((7, 7), (5, 5), 1.5)}
    grid = render.method_grid(image, heat, cell=64, padding=8)
    assert grid.width == 3 * 64 + 4 * 8
    assert grid.height > 64 + 2 * 8
    titled = render.method_grid(image, heat, cell=64, padding=8, title="tabby cat")
    assert titled.width == grid.width
    assert titled.height > grid.height
    # The first panel is the image itself, scaled to the cell.
    first = np.asarray(grid)[8 : 8 + 64, 8 : 8 + 64]
    expected = np.asarray(Image.fromarray(image).resize((64, 64), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(first, expected)
    # Labels are drawn under the panels, in the text colour.
    strip = np.asarray(grid)[8 + 64 :, :, :].astype(int)
    assert (strip.sum(axis=2) < 300).any()


def test_method_grid_keeps_the_aspect_ratio() -> None:
    grid = render.method_grid(_gray_image(100, 200), {"a": np.zeros((4, 4))}, cell=100, padding=4)
    assert grid.width == 2 * 100 + 3 * 4
    assert grid.height >= 50 + 2 * 4


def test_feature_map_grid_matches_make_grid_layout() -> None:
    rng = np.random.default_rng(2)
    maps = rng.standard_normal((13, 5, 7)) * np.arange(1, 14)[:, None, None]
    maps[3] = 4.0  # a constant map
    grid = np.asarray(render.feature_map_grid(maps, nrow=4, padding=2, pad_value=255))
    assert grid.shape == (4 * (5 + 2) + 2, 4 * (7 + 2) + 2, 3)
    for k in range(13):
        y, x = (k // 4) * 7 + 2, (k % 4) * 9 + 2
        tile = grid[y : y + 5, x : x + 7, 0]
        if k == 3:
            assert tile.max() == 0
        else:
            assert (tile.min(), tile.max()) == (0, 255)
            np.testing.assert_array_equal(np.argmax(tile), np.argmax(maps[k]))
    np.testing.assert_array_equal(grid[:2], 255)
    np.testing.assert_array_equal(grid[2:, 2:][4 * 7 - 7 :, 9 : 9 * 4], 255)  # empty cells


def test_feature_map_grid_cell_colormap_and_labels() -> None:
    maps = np.random.default_rng(3).random((5, 4, 4))
    scaled = render.feature_map_grid(maps, nrow=8, padding=1, cell=16, colormap="viridis")
    assert scaled.size == (5 * 17 + 1, 16 + 2)
    assert len({tuple(p) for p in np.asarray(scaled).reshape(-1, 3)} - {(255, 255, 255)}) > 3
    labelled = render.feature_map_grid(maps, nrow=8, padding=1, cell=16, labels=list("abcde"))
    assert labelled.width == scaled.width
    assert labelled.height > scaled.height
    with pytest.raises(ValueError, match="labels"):
        render.feature_map_grid(maps, labels=["a"])


def test_filter_tiles_are_min_max_scaled_per_filter() -> None:
    rng = np.random.default_rng(4)
    weights = (
        rng.standard_normal((5, 3, 3, 3)) * np.array([0.01, 1, 10, 100, 1000])[:, None, None, None]
    )
    grid = np.asarray(render.filter_tiles(weights, nrow=3, scale=4, padding=2))
    tile = 3 * 4
    assert grid.shape == (2 * (tile + 2) + 2, 3 * (tile + 2) + 2, 3)
    for k in range(5):
        y, x = (k // 3) * (tile + 2) + 2, (k % 3) * (tile + 2) + 2
        pixels = grid[y : y + tile, x : x + tile]
        assert (pixels.min(), pixels.max()) == (0, 255)
        # Nearest-neighbour enlargement: each filter tap is a scale x scale block.
        rgb = weights[k].transpose(1, 2, 0)
        low = np.unravel_index(int(np.argmin(rgb)), rgb.shape)
        assert pixels[low[0] * 4, low[1] * 4, low[2]] == 0
        np.testing.assert_array_equal(pixels[::4, ::4], pixels[3::4, 3::4])


def test_filter_tiles_show_other_channel_counts_in_gray() -> None:
    weights = np.random.default_rng(5).standard_normal((4, 2, 5, 5))
    grid = np.asarray(render.filter_tiles(weights, nrow=8, scale=2, padding=0))
    assert grid.shape == (10, 40, 3)
    np.testing.assert_array_equal(grid[:, :, 0], grid[:, :, 1])
    np.testing.assert_array_equal(grid[:, :, 1], grid[:, :, 2])
    first = grid[::2, :10:2, 0]
    np.testing.assert_array_equal(np.argmax(first), np.argmax(weights[0].mean(axis=0)))


# --- charts ----------------------------------------------------------------------------


def _annotations(figure: Any) -> list[str]:
    ax = figure.axes[0]
    return [child.get_text() for child in ax.texts]


def test_channel_profile_chart_highlights_and_labels_the_top_channels() -> None:
    values = np.full(40, 1.0)
    peaks = [3, 12, 20, 31, 37]
    values[peaks] = [5.0, 4.0, 6.0, 4.5, 5.5]
    chart = render.channel_profile_chart(values, top=5, width=600, height=260, title="layer4")
    assert chart.size == (600, 260)
    pixels = np.asarray(chart).astype(int)
    red = np.all(np.abs(pixels - (214, 39, 40)) < 4, axis=2)
    assert red.any(axis=0).sum() > 5 * 3  # five red bars, a few pixels wide each
    figure = render.channel_profile_figure(values, top=5, title="layer4")
    ax = figure.axes[0]
    assert ax.get_title() == "layer4"
    assert ax.get_xlabel() == "channel (0-39)"
    assert ax.get_ylabel() == "mean activation"
    box = ax.get_legend()
    assert box is not None
    legend = [t.get_text() for t in box.get_texts()]
    assert legend == ["channel", "the 5 strongest (numbered)"]
    # Labelled with their channel numbers, strongest first.
    assert _annotations(figure) == ["20", "37", "3", "31", "12"]
    plain = render.channel_profile_figure(values, top=0)
    assert _annotations(plain) == []


def test_channel_profile_chart_labels_the_real_channel_numbers() -> None:
    values = np.array([0.5, 3.0, 1.0, 2.0])
    figure = render.channel_profile_figure(values, channels=[100, 205, 310, 415], top=2)
    assert _annotations(figure) == ["205", "415"]
    assert figure.axes[0].get_xlabel() == "channel (100-415)"
    with pytest.raises(ValueError, match="channel numbers"):
        render.channel_profile_figure(values, channels=[1, 2])


def test_channel_profile_chart_handles_many_and_negative_channels() -> None:
    values = np.random.default_rng(6).standard_normal(2048)
    chart = render.channel_profile_chart(values, top=3)
    assert chart.size == (800, 300)
    with pytest.raises(ValueError, match="no values"):
        render.channel_profile_chart(np.array([]))


# --- embeddings ------------------------------------------------------------------------


def _two_clusters(n: int = 40, dims: int = 16) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    rng = np.random.default_rng(7)
    offset = np.zeros(dims)
    offset[3] = 10.0
    features = np.concatenate(
        [rng.standard_normal((n, dims)) - offset, rng.standard_normal((n, dims)) + offset]
    )
    return features, np.repeat([0, 1], n)


def test_pca_2d_separates_two_clusters() -> None:
    features, classes = _two_clusters()
    xy = render.pca_2d(features)
    assert xy.shape == (80, 2)
    first = xy[:, 0]
    assert first[classes == 0].max() < first[classes == 1].min() or (
        first[classes == 1].max() < first[classes == 0].min()
    )
    assert abs(first[classes == 0].mean() - first[classes == 1].mean()) > 15


def test_pca_2d_is_deterministic() -> None:
    features, _ = _two_clusters()
    perm = np.random.default_rng(8).permutation(len(features))
    np.testing.assert_allclose(render.pca_2d(features[perm]), render.pca_2d(features)[perm])
    assert render.pca_2d(np.ones((1, 4))).shape == (1, 2)
    one_dim = render.pca_2d(np.arange(5.0)[:, None])
    np.testing.assert_array_equal(one_dim[:, 1], 0)


def test_tsne_2d_separates_two_clusters() -> None:
    pytest.importorskip("sklearn")
    features, classes = _two_clusters(n=20)
    xy = render.tsne_2d(features, seed=0)
    assert xy.shape == (40, 2)
    gap = np.linalg.norm(xy[classes == 0].mean(0) - xy[classes == 1].mean(0))
    spread = max(xy[classes == k].std(0).max() for k in (0, 1))
    assert gap > 3 * spread


def test_tsne_2d_without_scikit_learn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    with pytest.raises(ImportError, match=r"pip install 'camserve\[plots\]'"):
        render.tsne_2d(np.zeros((4, 3)))


def test_embedding_scatter_colours_points_by_class() -> None:
    xy = np.array([[-1.0, 0.0]] * 5 + [[1.0, 0.0]] * 5)
    classes = np.repeat([0, 1], 5)
    image = render.embedding_scatter(xy, classes, labels=["cat", "dog"], size=300)
    assert image.height == 300
    assert image.width > 300  # the legend
    pixels = np.asarray(image).astype(int)
    first, second = render.class_colors(2)
    xs0 = np.flatnonzero(np.all(np.abs(pixels - first) < 3, axis=2).any(axis=0))
    xs1 = np.flatnonzero(np.all(np.abs(pixels - second) < 3, axis=2).any(axis=0))
    assert xs0.size and xs1.size
    assert xs0.min() < xs1.min()  # class 0 on the left (and in the legend, below both)


def test_class_colors_are_distinct() -> None:
    colours = render.class_colors(40)
    assert len(set(colours)) == 40


def test_snap_to_grid_gives_distinct_cells_near_each_point() -> None:
    rng = np.random.default_rng(9)
    xy = rng.random((150, 2))
    cells = render.snap_to_grid(xy, 15)
    assert cells.shape == (150, 2)
    assert len({tuple(c) for c in cells.tolist()}) == 150
    assert cells.min() >= 0
    assert cells.max() <= 14
    # Points already on the lattice keep their own cell (y grows upwards).
    lattice = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.25]])
    np.testing.assert_array_equal(render.snap_to_grid(lattice, 5), [[4, 0], [0, 4], [3, 2]])
    with pytest.raises(ValueError, match="do not fit"):
        render.snap_to_grid(rng.random((10, 2)), 3)


def test_thumbnail_map_places_every_thumbnail_without_overlap() -> None:
    rng = np.random.default_rng(10)
    count, thumb, grid = 30, 8, 6
    colours = [(i * 8, 250 - i * 8, (i * 37) % 256) for i in range(count)]
    images = [np.full((thumb, thumb, 3), colour, np.uint8) for colour in colours]
    xy = rng.standard_normal((count, 2))
    xy[:10] *= 0.01  # a crowd near the origin
    canvas = np.asarray(render.thumbnail_map(xy, images, grid=grid, thumb=thumb))
    assert canvas.shape == (grid * thumb, grid * thumb, 3)
    for colour in colours:
        where = np.all(canvas == colour, axis=2)
        assert where.sum() == thumb * thumb
        ys, xs = np.nonzero(where)
        assert ys.min() % thumb == 0
        assert xs.min() % thumb == 0
        assert (ys.max() - ys.min(), xs.max() - xs.min()) == (thumb - 1, thumb - 1)


# --- dependencies ----------------------------------------------------------------------


def test_importing_render_does_not_import_torch() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(CLIENT_DIR), *filter(None, [env.get("PYTHONPATH")])])
    code = (
        "import sys, camserve.render; "
        "heavy = sorted(m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules); "
        "print(' '.join(heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""
