"""Encoded image bytes to an upright RGB picture (METHODS.md, "Images in, heatmaps out").

Accepted: JPEG (a multi-picture JPEG, MPO, counts as JPEG: its first picture), PNG,
WebP, BMP and GIF (first frame). Everything else is refused with ``InvalidArgument``.

Checks run in this order, each before any pixel is decoded: empty input, the byte
cap, the format from the header, the pixel cap from the header's width x height.
Pillow's own decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``, process wide)
is left untouched: its error is reported as ``InvalidArgument`` too, so a
``max_pixels`` above twice that value is capped there.

Truncated data is refused because ``load()`` raises while
``ImageFile.LOAD_TRUNCATED_IMAGES`` keeps its default, False; this module never
changes it.

The EXIF orientation (ImageOps.exif_transpose's table) is read from what the
header holds, once, by both ``image_size`` and ``decode_image``, so the two always
agree: a PNG ``eXIf`` chunk placed after the pixel data is ignored.

Colour: alpha is dropped (the colour channels are kept, as ``convert("RGB")``
does; nothing is composited); 1-bit, L, LA, P, PA and CMYK go through Pillow's
conversions; 16-bit grayscale is scaled by its bit depth (65535 -> 255), never
clipped.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InvalidArgument

ACCEPTED_FORMATS: Final = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
ACCEPTED_NAMES: Final = "JPEG, PNG, WebP, BMP, GIF"
DEFAULT_MAX_PIXELS: Final = 40_000_000
DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024  # an uncompressed RGBA picture at the pixel cap fits

_FORMAT_ALIASES: Final = {"MPO": "JPEG"}
_ORIENTATION: Final = 0x0112
_TRANSPOSE: Final = {  # EXIF orientation -> the transpose that makes the picture upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES: Final = frozenset((5, 6, 7, 8))
_SIXTEEN_BIT: Final = ("I;16", "I;16L", "I;16B", "I;16N")


@contextmanager
def _decode_errors() -> Iterator[None]:
    """Turn whatever a decoder raises on bad bytes into ``InvalidArgument``."""
    try:
        yield
    except (InvalidArgument, MemoryError):
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidArgument(f"image exceeds the pixel limit: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidArgument(
            f"could not decode image: not a recognised image (accepted formats: {ACCEPTED_NAMES})"
        ) from exc
    except Exception as exc:
        raise InvalidArgument(f"could not decode image: {exc}") from exc


def _open(data: bytes, max_pixels: int, max_bytes: int) -> Image.Image:
    """Open (not decode) an image; size, format and pixel count checked from the header."""
    if not data:
        raise InvalidArgument("the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise InvalidArgument(f"the image is {len(data)} bytes, over the limit of {max_bytes}")
    image = Image.open(io.BytesIO(data))
    name = str(image.format)
    if _FORMAT_ALIASES.get(name, name) not in ACCEPTED_FORMATS:
        image.close()
        raise InvalidArgument(
            f"unsupported image format {name}; accepted formats: {ACCEPTED_NAMES}"
        )
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise InvalidArgument(f"could not decode image: it has no pixels ({width}x{height})")
    if width * height > max_pixels:
        image.close()
        raise InvalidArgument(
            f"image of {width}x{height} = {width * height} pixels exceeds the limit of "
            f"{max_pixels} pixels"
        )
    return image


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) known from the header; 1 when absent or unreadable."""
    try:
        # The base method reads only what the header gave (a PNG's own would decode).
        value: Any = Image.Image.getexif(image).get(_ORIENTATION, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def image_size(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[int, int]:
    """The upright (height, width) ``decode_image`` would return, read from the header alone."""
    with _decode_errors(), _open(data, max_pixels, max_bytes) as image:
        width, height = image.size
        swapped = _orientation(image) in _SWAPS_SIDES
    return (width, height) if swapped else (height, width)


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> Image.Image:
    """Decode encoded bytes into an upright 8-bit RGB image, or raise ``InvalidArgument``.

    The result carries no metadata (no EXIF left to apply twice).
    """
    with _decode_errors(), _open(data, max_pixels, max_bytes) as image:
        orientation = _orientation(image)
        image.load()  # the first frame; raises on truncated data
        upright = image.transpose(_TRANSPOSE[orientation]) if orientation != 1 else image
        rgb = to_rgb(upright)
    rgb.info = {}
    return rgb


def to_rgb(image: Image.Image) -> Image.Image:
    """A new 8-bit RGB image: alpha dropped, grayscale repeated, 16-bit scaled by its range."""
    mode = image.mode
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return _to_8bit(image).convert("RGB")
    if mode in ("LA", "PA") or (mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").convert("RGB")  # the colours under the alpha, kept
    return image.convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    """Grayscale wider than 8 bits to ``L``: 16-bit by 65535; ``I``/``F`` by the range used."""
    array = np.asarray(image).astype(np.float32)
    if image.mode in _SIXTEEN_BIT:
        top = 65535.0
    else:  # 32-bit: by the smallest of 8, 16 or the actual maximum that holds the values
        peak = float(array.max()) if array.size else 0.0
        top = 255.0 if peak <= 255.0 else 65535.0 if peak <= 65535.0 else peak
    scaled = np.rint(np.clip(array * np.float32(255.0 / top), 0.0, 255.0))
    return Image.fromarray(scaled.astype(np.uint8))


__all__ = [
    "ACCEPTED_FORMATS",
    "ACCEPTED_NAMES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "decode_image",
    "image_size",
    "to_rgb",
]
