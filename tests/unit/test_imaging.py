"""Images in, heatmaps out: decoding, preprocessing and placing heatmaps on the picture.

Every picture is made with Pillow here; nothing is downloaded.
"""

from __future__ import annotations

import io
import math
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps, ImageSequence
from torchvision.transforms.v2 import functional as TF

from camserve_server.errors import InvalidArgument
from camserve_server.models.imaging import (
    ACCEPTED_NAMES,
    Placement,
    Preprocess,
    convert_heatmap,
    decode_image,
    image_size,
    place_heatmap,
    validate_tensor,
)

ORIENTATION = 0x0112


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(height: int, width: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth(height: int, width: int) -> npt.NDArray[np.uint8]:
    """A smooth colour picture: lossy formats keep it close."""
    y = np.linspace(0, 255, height)[:, None]
    x = np.linspace(0, 255, width)[None, :]
    channels = [y + 0 * x, x + 0 * y, (y + x) / 2]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def pixels(image: Image.Image) -> npt.NDArray[np.int64]:
    return np.asarray(image).astype(np.int64)


# --- decoding: formats ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options", "tolerance"),
    [
        ("PNG", {}, 0),
        ("BMP", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("WEBP", {"quality": 95}, 12),
        ("JPEG", {"quality": 95}, 12),
    ],
)
def test_accepted_formats_round_trip(fmt: str, options: dict[str, Any], tolerance: int) -> None:
    original = smooth(37, 53)
    image = decode_image(encode(Image.fromarray(original), fmt, **options))
    assert image.mode == "RGB"
    assert image.size == (53, 37)
    assert np.abs(pixels(image) - original).max() <= tolerance
    assert image_size(encode(Image.fromarray(original), fmt, **options)) == (37, 53)


def test_gif_first_frame_with_its_palette() -> None:
    frames = [Image.new("RGB", (20, 10), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert sum(1 for _ in ImageSequence.Iterator(Image.open(io.BytesIO(data)))) == 2
    image = decode_image(data)
    assert image.mode == "RGB"
    assert image.size == (20, 10)
    assert (pixels(image) == [255, 0, 0]).all()


def test_multi_picture_jpeg_is_a_jpeg() -> None:
    first, second = Image.new("RGB", (32, 24), (0, 200, 0)), Image.new("RGB", (32, 24), 0)
    data = encode(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert np.abs(pixels(decode_image(data)) - [0, 200, 0]).max() <= 3


@pytest.mark.parametrize("fmt", ["TIFF", "PPM", "ICO", "TGA", "PCX"])
def test_other_formats_refused_naming_the_accepted(fmt: str) -> None:
    data = encode(Image.fromarray(noise(16, 16)), fmt)
    for read in (decode_image, image_size):
        with pytest.raises(InvalidArgument, match="unsupported image format") as info:
            read(data)
        assert ACCEPTED_NAMES in str(info.value)
        assert "JPEG" in str(info.value) and "WebP" in str(info.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF"])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_images_refused(fmt: str, keep: float) -> None:
    data = encode(Image.fromarray(noise(64, 80)), fmt)
    with pytest.raises(InvalidArgument, match="could not decode image"):
        decode_image(data[: int(len(data) * keep)])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_jpeg_missing_its_last_bytes_refused() -> None:
    data = encode(Image.fromarray(noise(64, 80)), "JPEG")
    with pytest.raises(InvalidArgument, match="truncated"):
        decode_image(data[:-2])


@pytest.mark.parametrize(
    "data",
    [
        b"this is not an image, just some text",
        bytes(range(256)) * 8,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,  # a PNG signature, then nonsense
        b"\xff\xd8\xff\xe0" + b"\x13" * 64,  # a JPEG start, then nonsense
        b"BM" + b"\x00" * 100,  # a BMP start, then zeros
        b"GIF89a" + b"\x00" * 5,
        b"RIFF\x10\x00\x00\x00WEBPVP8 ",
        b"\x00" * 100,
    ],
)
def test_garbage_refused(data: bytes) -> None:
    with pytest.raises(InvalidArgument, match="could not decode image"):
        decode_image(data)


def test_corrupt_png_data_refused() -> None:
    data = bytearray(encode(Image.fromarray(noise(32, 32)), "PNG"))
    data[len(data) // 2] ^= 0xFF  # a CRC (or zlib) mismatch inside the pixel data
    with pytest.raises(InvalidArgument, match="could not decode image"):
        decode_image(bytes(data))


def test_empty_and_oversized_bytes_refused() -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        decode_image(b"")
    with pytest.raises(InvalidArgument, match="empty"):
        image_size(b"")
    data = encode(Image.fromarray(noise(16, 16)), "PNG")
    with pytest.raises(InvalidArgument, match="over the limit"):
        decode_image(data, max_bytes=len(data) - 1)
    assert decode_image(data, max_bytes=len(data)).size == (16, 16)


# --- decoding: decompression bombs ------------------------------------------------------------


@pytest.fixture
def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Once called, fail the test if any pixel data gets decoded."""

    def refuse(self: Image.Image) -> NoReturn:
        raise AssertionError("pixel data was decoded")

    def forbid() -> None:
        monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
        monkeypatch.setattr(Image.Image, "load", refuse)

    return forbid


@pytest.mark.parametrize(
    ("width", "height", "match"),
    [
        (100_000, 100_000, "pixel limit"),  # beyond Pillow's own guard too
        (8_000, 6_000, "exceeds the limit of 40000000 pixels"),  # beyond ours alone
    ],
)
def test_decompression_bomb_refused_from_the_header(
    width: int, height: int, match: str, forbid_decoding: Callable[[], None]
) -> None:
    data = png_header(width, height)
    forbid_decoding()
    started = time.perf_counter()
    for read in (decode_image, image_size):
        with pytest.raises(InvalidArgument, match=match):
            read(data)
    assert time.perf_counter() - started < 0.5


def test_real_image_over_a_small_cap_refused_before_decoding(
    forbid_decoding: Callable[[], None],
) -> None:
    data = encode(Image.fromarray(noise(300, 400)), "PNG")
    forbid_decoding()
    with pytest.raises(
        InvalidArgument, match="400x300 = 120000 pixels exceeds the limit of 119999"
    ):
        decode_image(data, max_pixels=119_999)


def test_pixel_cap_is_inclusive_and_global_state_untouched() -> None:
    before = Image.MAX_IMAGE_PIXELS
    data = encode(Image.fromarray(noise(300, 400)), "PNG")
    assert decode_image(data, max_pixels=120_000).size == (400, 300)
    assert image_size(data, max_pixels=120_000) == (300, 400)
    assert before == Image.MAX_IMAGE_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- decoding: orientation and colour -----------------------------------------------------------


def exif_with(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif


def spot_picture() -> Image.Image:
    """60 rows x 80 columns, dark, with a bright 30 x 30 spot at the top left."""
    stored = np.full((60, 80, 3), 20, dtype=np.uint8)
    stored[:30, :30] = 240
    return Image.fromarray(stored)


def test_exif_rotation_puts_the_spot_where_a_viewer_shows_it() -> None:
    data = encode(spot_picture(), "JPEG", exif=exif_with(6), quality=95)  # 6: rotate 90 CW
    image = decode_image(data)
    assert image.size == (60, 80)  # (width, height): upright, portrait
    assert image_size(data) == (80, 60)
    upright = pixels(image).mean(axis=2)
    assert upright[:30, 30:].mean() > 200  # top right, as a viewer shows it
    assert upright[:30, :30].mean() < 40
    assert upright[30:].mean() < 40
    assert ORIENTATION not in image.getexif()  # not to be applied twice


@pytest.mark.parametrize("mode", ["resize", "resize_crop"])
def test_heatmap_of_the_spot_lands_on_the_spot(mode: str) -> None:
    image = decode_image(encode(spot_picture(), "JPEG", exif=exif_with(6), quality=95))
    preprocess = Preprocess(input_size=(32, 32), resize_mode=mode, resize_size=40)
    x, placement = preprocess(image)
    std = torch.tensor(preprocess.std).view(3, 1, 1)
    mean = torch.tensor(preprocess.mean).view(3, 1, 1)
    brightness = (x * std + mean).mean(dim=0)  # the model-space picture: the spot lights up
    heat = (brightness - brightness.min()) / (brightness.max() - brightness.min())
    assert heat[:8, 24:].mean() > 0.8  # top right in model space too
    placed = place_heatmap(heat[None], placement)
    assert placed.shape == (1, 80, 60)
    onto = placed[0]
    top, left, _, width = placement.box  # the spot is rows 0-29, columns 30-59
    rows = slice(math.ceil(top), 30)
    columns = slice(30, math.floor(left + width))
    assert onto[rows, columns].mean() > 0.6
    assert onto[35:, :].max() < 0.2
    assert onto[:, :25].max() < 0.2
    if mode == "resize_crop":
        assert top > 10 and left + width < 57
        assert float(onto[: math.floor(top)].max()) == 0.0  # outside the crop: zero
        assert float(onto[:, math.ceil(left + width) :].max()) == 0.0


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_every_orientation_matches_exif_transpose(orientation: int, fmt: str) -> None:
    options: dict[str, Any] = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(Image.fromarray(noise(12, 20)), fmt, exif=exif_with(orientation), **options)
    opened = Image.open(io.BytesIO(data))
    expected = ImageOps.exif_transpose(opened).convert("RGB")
    image = decode_image(data)
    assert image.size == expected.size
    assert (pixels(image) == pixels(expected)).all()
    assert image_size(data) == (image.height, image.width)


def test_unreadable_orientation_is_ignored() -> None:
    data = encode(Image.fromarray(noise(12, 20)), "JPEG", exif=exif_with(42))
    assert decode_image(data).size == (20, 12)
    assert image_size(data) == (12, 20)


def test_alpha_dropped_colours_kept() -> None:
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:, :6, 3] = 0  # transparent left half: its colour is kept, not composited
    rgba[:, 6:, 3] = 255
    for fmt in ("PNG", "WEBP"):
        options: dict[str, Any] = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
        image = decode_image(encode(Image.fromarray(rgba), fmt, **options))
        assert image.mode == "RGB"
        assert (pixels(image) == [10, 20, 30]).all()


def test_palette_with_transparency_to_rgb() -> None:
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    for fmt in ("PNG", "GIF"):
        image = decode_image(encode(palette, fmt, transparency=1))
        assert image.mode == "RGB"
        assert (pixels(image) == [200, 100, 50]).all()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP"])
def test_grayscale_gives_three_equal_channels(fmt: str) -> None:
    gray = np.tile(np.linspace(0, 255, 40).round().astype(np.uint8), (16, 1))
    options: dict[str, Any] = {"lossless": True} if fmt == "WEBP" else {}
    image = decode_image(encode(Image.fromarray(gray), fmt, **options))
    values = pixels(image)
    assert (values[..., 0] == values[..., 1]).all() and (values[..., 1] == values[..., 2]).all()
    assert np.abs(values[..., 0] - gray).max() <= (6 if fmt == "JPEG" else 0)


def test_gray_with_alpha_and_one_bit() -> None:
    la = Image.fromarray(np.dstack([np.full((6, 6), 90, np.uint8), np.zeros((6, 6), np.uint8)]))
    assert la.mode == "LA"
    assert (pixels(decode_image(encode(la, "PNG"))) == 90).all()
    bits = Image.fromarray(np.eye(8, dtype=bool))
    assert bits.mode == "1"
    for fmt in ("PNG", "BMP"):
        values = pixels(decode_image(encode(bits, fmt)))
        assert (values[..., 0] == np.eye(8) * 255).all()


def test_sixteen_bit_gradient_scaled_not_saturated() -> None:
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)
    data = encode(Image.fromarray(np.tile(ramp, (4, 1))), "PNG")
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I;16B", "I")
    image = decode_image(data)
    values = pixels(image)
    assert (values[..., 0] == values[..., 2]).all()
    row = values[0, :, 0]
    assert row.min() == 0 and row.max() == 255
    assert (np.diff(row) >= 0).all()
    assert len(np.unique(row)) > 250  # a gradient, not a clipped step
    assert np.abs(row - np.rint(ramp / 65535 * 255)).max() <= 1


def test_sixteen_bit_dark_values_stay_dark() -> None:
    dark = np.full((4, 4), 1000, dtype=np.uint16)  # 1000 / 65535: dark, not white
    value = pixels(decode_image(encode(Image.fromarray(dark), "PNG")))[0, 0, 0]
    assert value == round(1000 / 65535 * 255)


def test_cmyk_jpeg_to_rgb() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red
    image = decode_image(encode(cmyk, "JPEG", quality=95))
    assert image.mode == "RGB"
    assert np.abs(pixels(image) - [255, 0, 0]).max() <= 6


# --- preprocessing -------------------------------------------------------------------------------


def test_normalisation_matches_the_formula() -> None:
    rgb = noise(24, 20)
    preprocess = Preprocess(input_size=(24, 20), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    x, placement = preprocess(Image.fromarray(rgb))
    assert x.dtype == torch.float32 and x.shape == (3, 24, 20)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    expected = (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - mean) / std
    assert torch.allclose(x, expected, atol=1e-6)
    assert placement == Placement(original_size=(24, 20))


@pytest.mark.parametrize("size", [(37, 53), (300, 200), (64, 64), (17, 290)])
def test_resize_is_bilinear_antialiased(size: tuple[int, int]) -> None:
    rgb = noise(*size, seed=3)
    preprocess = Preprocess(input_size=(32, 48), mean=(0, 0, 0), std=(1, 1, 1))
    x, _ = preprocess(Image.fromarray(rgb))
    reference = TF.resize(
        torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, [32, 48], antialias=True
    )
    assert torch.allclose(x, reference, atol=1e-6)


@pytest.mark.parametrize(
    "size", [(300, 400), (400, 300), (257, 257), (225, 999), (331, 229), (256, 256), (256, 300)]
)
def test_resize_crop_matches_torchvision_evaluation(size: tuple[int, int]) -> None:
    rgb = noise(*size, seed=4)
    preprocess = Preprocess(input_size=(224, 224), resize_mode="resize_crop")
    assert preprocess.shorter_side == 256
    x, placement = preprocess(Image.fromarray(rgb))
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    reference = TF.center_crop(TF.resize(tensor, [256], antialias=True), [224, 224])
    reference = TF.normalize(reference, list(preprocess.mean), list(preprocess.std))
    assert torch.allclose(x, reference, atol=1e-5)
    assert placement.original_size == size


def test_crop_placement_in_original_coordinates() -> None:
    preprocess = Preprocess(input_size=(224, 224), resize_mode="resize_crop")
    placement = preprocess.placement((300, 400))
    assert preprocess.resized_shape(300, 400) == (256, 341)
    top, left = round(16.0), round(58.5)  # torchvision's centre-crop anchor
    assert placement.crop == pytest.approx(
        (top * 300 / 256, left * 400 / 341, 224 * 300 / 256, 224 * 400 / 341)
    )


def test_crop_that_would_not_fit_scales_up_instead_of_padding() -> None:
    preprocess = Preprocess(input_size=(32, 64), resize_mode="resize_crop", resize_size=36)
    assert preprocess.resized_shape(100, 100) == (64, 64)
    x, placement = preprocess(Image.fromarray(noise(100, 100)))
    assert x.shape == (3, 32, 64)
    assert placement.crop == pytest.approx((25.0, 0.0, 50.0, 100.0))


def test_preprocess_accepts_any_mode_and_rejects_bad_settings() -> None:
    gray = Image.fromarray(np.full((10, 10), 128, np.uint8))
    x, _ = Preprocess(input_size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1))(gray)
    assert torch.allclose(x, torch.full((3, 8, 8), 128 / 255))
    for bad in (
        {"input_size": (0, 8)},
        {"input_size": (8, 8), "std": (1.0, 0.0, 1.0)},
        {"input_size": (8, 8), "resize_mode": "stretch"},
        {"input_size": (8, 8), "resize_size": 0},
    ):
        with pytest.raises(ValueError, match="must"):
            Preprocess(**bad)


def test_digest_stable_and_sensitive() -> None:
    base = Preprocess(input_size=(224, 224))
    assert base.digest() == Preprocess(input_size=(224, 224)).digest()
    assert base.digest() == "e5f79907c54f6e20"  # changing it invalidates every cache
    assert len(base.digest()) == 16
    zero = Preprocess(input_size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1))
    assert zero.digest() == Preprocess(input_size=(8, 8), mean=(0.0,) * 3, std=(1.0,) * 3).digest()
    crop = Preprocess(input_size=(224, 224), resize_mode="resize_crop")
    assert (
        crop.digest() == Preprocess((224, 224), resize_mode="resize_crop", resize_size=256).digest()
    )
    assert base.digest() == Preprocess(input_size=(224, 224), resize_size=300).digest()  # unused
    others = [
        Preprocess(input_size=(224, 225)),
        Preprocess(input_size=(224, 224), mean=(0.5, 0.456, 0.406)),
        Preprocess(input_size=(224, 224), std=(0.229, 0.224, 0.2)),
        crop,
        Preprocess(input_size=(224, 224), resize_mode="resize_crop", resize_size=232),
    ]
    digests = {base.digest()} | {other.digest() for other in others}
    assert len(digests) == len(others) + 1


# --- placing heatmaps ----------------------------------------------------------------------------


def test_placement_without_crop_is_a_bilinear_resize() -> None:
    heat = torch.rand(2, 7, 9, generator=torch.Generator().manual_seed(0))
    placed = place_heatmap(heat, Placement(original_size=(30, 50)))
    expected = F.interpolate(heat[:, None], size=(30, 50), mode="bilinear", align_corners=False)
    assert placed.shape == (2, 30, 50) and placed.dtype == torch.float32
    assert torch.allclose(placed, expected[:, 0], atol=1e-6)
    assert torch.equal(place_heatmap(heat, Placement((7, 9))), heat)


def test_crop_placement_zero_outside_and_the_map_inside() -> None:
    heat = torch.rand(3, 16, 20, generator=torch.Generator().manual_seed(1))
    placement = Placement(original_size=(100, 120), crop=(10.0, 20.0, 64.0, 80.0))
    placed = place_heatmap(heat, placement)
    assert placed.shape == (3, 100, 120)
    inside = placed[:, 10:74, 20:100]
    expected = F.interpolate(heat[:, None], size=(64, 80), mode="bilinear", align_corners=False)
    assert torch.allclose(inside, expected[:, 0], atol=1e-5)
    outside = placed.clone()
    outside[:, 10:74, 20:100] = 0
    assert float(outside.abs().max()) == 0.0


def test_crop_placement_scales_with_the_output_size() -> None:
    heat = torch.ones(1, 16, 20)
    placement = Placement(original_size=(100, 120), crop=(10.0, 20.0, 64.0, 80.0))
    placed = place_heatmap(heat, placement, out_size=(50, 240))  # half as tall, twice as wide
    assert placed.shape == (1, 50, 240)
    rows = placed[0].amax(dim=1).nonzero().flatten()
    cols = placed[0].amax(dim=0).nonzero().flatten()
    assert (int(rows.min()), int(rows.max())) == (5, 36)
    assert (int(cols.min()), int(cols.max())) == (40, 199)
    assert float(placed[0, 5:37, 40:200].min()) == 1.0


def test_peak_lands_where_the_model_saw_it() -> None:
    preprocess = Preprocess(input_size=(224, 224), resize_mode="resize_crop")
    placement = preprocess.placement((300, 400))
    heat = torch.zeros(1, 224, 224)
    heat[0, 150, 40] = 1.0
    placed = place_heatmap(heat, placement)
    assert placement.crop is not None
    top, left, height, width = placement.crop
    row, col = divmod(int(placed[0].argmax()), 400)
    assert abs(row - (top + 150.5 * height / 224)) <= 1.5
    assert abs(col - (left + 40.5 * width / 224)) <= 1.5


def test_placed_values_stay_in_unit_range() -> None:
    heat = torch.tensor([[[-0.5, 2.0], [0.3, 1.5]]])
    for placement in (Placement((9, 9)), Placement((9, 9), crop=(1.0, 1.0, 6.0, 6.0))):
        placed = place_heatmap(heat, placement, out_size=(12, 7))
        assert float(placed.min()) >= 0.0 and float(placed.max()) <= 1.0
    assert place_heatmap(torch.zeros(0, 4, 4), Placement((9, 9))).shape == (0, 9, 9)
    away = place_heatmap(torch.ones(1, 4, 4), Placement((9, 9), crop=(20.0, 20.0, 5.0, 5.0)))
    assert away.shape == (1, 9, 9) and float(away.max()) == 0.0
    overhang = place_heatmap(torch.ones(1, 4, 4), Placement((9, 9), crop=(-3.0, 4.0, 6.0, 9.0)))
    assert float(overhang[0, :3, 4:].min()) == 1.0 and float(overhang[0, 3:].max()) == 0.0
    with pytest.raises(InvalidArgument, match="output size"):
        place_heatmap(heat, Placement((9, 9)), out_size=(0, 5))
    with pytest.raises(ValueError, match=r"\(T, h, w\)"):
        place_heatmap(heat[0], Placement((9, 9)))


# --- tensor input and heatmap encodings ----------------------------------------------------------


def test_valid_tensors_accepted_as_copies() -> None:
    array = np.random.default_rng(0).standard_normal((3, 16, 12)).astype(np.float32)
    tensor = validate_tensor(array)
    assert tensor.shape == (3, 16, 12) and tensor.dtype == torch.float32
    array[0, 0, 0] = 99.0
    assert float(tensor[0, 0, 0]) != 99.0
    assert validate_tensor(array[None]).shape == (3, 16, 12)
    assert torch.equal(validate_tensor(array.astype(">f4")), torch.from_numpy(array))
    assert validate_tensor(np.zeros((3, 8, 4096), np.float32)).shape == (3, 8, 4096)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((3, 16, 16), np.float64), "float32"),
        (np.zeros((3, 16, 16), np.float16), "float32"),
        (np.zeros((3, 16, 16), np.uint8), "float32"),
        (np.zeros((16, 16), np.float32), "shape"),
        (np.zeros((4, 16, 16), np.float32), "shape"),
        (np.zeros((16, 16, 3), np.float32), "shape"),
        (np.zeros((2, 3, 16, 16), np.float32), "shape"),
        (np.zeros((3, 7, 16), np.float32), r"\[8, 4096\]"),
        (np.zeros((3, 16, 4097), np.float32), r"\[8, 4096\]"),
        (np.full((3, 16, 16), np.nan, np.float32), "NaN or infinite"),
        (np.full((3, 16, 16), np.inf, np.float32), "NaN or infinite"),
    ],
)
def test_bad_tensors_refused(array: npt.NDArray[Any], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        validate_tensor(array)


def test_convert_heatmap() -> None:
    heat = torch.tensor([[0.0, 0.5, 1.0], [0.001, 0.998, 0.2]])
    as_bytes = convert_heatmap(heat, "uint8")
    assert as_bytes.dtype == np.uint8
    assert as_bytes.tolist() == [[0, 128, 255], [0, 254, 51]]
    assert convert_heatmap(heat, "float16").dtype == np.float16
    as_float = convert_heatmap(heat, "float32")
    assert as_float.dtype == np.float32 and np.allclose(as_float, heat.numpy())
    clamped = convert_heatmap(torch.tensor([-1.0, 2.0, float("nan")]), "uint8")
    assert clamped.tolist() == [0, 255, 0]
    with pytest.raises(InvalidArgument, match="float32, float16, uint8"):
        convert_heatmap(heat, "int8")
