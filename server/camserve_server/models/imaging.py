"""Images in, heatmaps out: decode what callers send, preprocess it, and put heatmaps back
onto the picture they sent (METHODS.md, "Images in, heatmaps out").

Decoding applies the EXIF orientation and converts to RGB (alpha dropped,
grayscale, palette, CMYK and 16-bit converted). Formats outside JPEG, PNG, WebP,
BMP and GIF (first frame) are refused, and so is any image over the pixel cap,
checked from the header before a pixel is decoded.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InvalidArgument

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
MIN_SIDE, MAX_SIDE = 8, 4096
T = TypeVar("T")
HeatmapDtype = Literal["float32", "float16", "uint8"]


_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open (not decode) an image: format and pixel count checked from the header."""
    if not data:
        raise InvalidArgument("the image bytes are empty")
    image = Image.open(io.BytesIO(data))
    if image.format not in ACCEPTED_FORMATS:
        raise InvalidArgument(
            f"unsupported image format {image.format}; accepted: {', '.join(ACCEPTED_FORMATS)}"
        )
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidArgument(
            f"image of {width}x{height} = {width * height} pixels exceeds the limit of "
            f"{max_pixels} pixels"
        )
    return image


def _guarded(action: Callable[[], T]) -> T:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return action()
    except InvalidArgument:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidArgument(f"could not decode image: {exc}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument(f"image has too many pixels: {exc}") from None


def image_size(data: bytes, *, max_pixels: int = 40_000_000) -> tuple[int, int]:
    """The upright (height, width) of an encoded image, read from its header alone."""

    def read() -> tuple[int, int]:
        image = _open(data, max_pixels)
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
        return (width, height) if orientation in _SWAPS_SIDES else (height, width)

    return _guarded(read)


def decode_image(data: bytes, *, max_pixels: int = 40_000_000) -> Image.Image:
    """Decode encoded bytes into an upright RGB image, or raise ``InvalidArgument``."""

    def read() -> Image.Image:
        image = _open(data, max_pixels)
        if image.format == "GIF":
            image.seek(0)
        image.load()
        upright: Image.Image = ImageOps.exif_transpose(image) or image
        return to_rgb(upright)

    return _guarded(read)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with 8 bits per channel; 16-bit and 32-bit images scaled by their full range."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            scale = 65535.0
        else:
            scale = float(array.max()) if array.size and array.max() > 255 else 255.0
        array = np.clip(array / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode in ("LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").convert("RGB")  # alpha dropped, colours kept
    return image.convert("RGB")


@dataclass(frozen=True)
class Placement:
    """Where the model's input came from in the original picture.

    ``original_size`` is (height, width) of the decoded, upright image; ``crop``
    the (top, left, height, width) region the model saw, in original pixels.
    """

    original_size: tuple[int, int]
    crop: tuple[float, float, float, float]


@dataclass(frozen=True)
class Preprocess:
    """Resize (bilinear, antialiased) or resize + centre crop, then normalise."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize_mode: str = "resize"
    resize_size: int | None = None

    def digest(self) -> str:
        """A short stable hash of these settings, part of every cache key."""
        settings = json.dumps(
            [list(self.input_size), list(self.mean), list(self.std), self.resize_mode,
             self.resize_size],
        )  # fmt: skip
        return hashlib.sha256(settings.encode()).hexdigest()[:16]

    def _resized_shape(self, height: int, width: int) -> tuple[int, int]:
        out_h, out_w = self.input_size
        if self.resize_mode != "resize_crop":
            return out_h, out_w
        shorter = self.resize_size or round(min(out_h, out_w) / 0.875)
        scale = shorter / min(height, width)
        return max(out_h, round(height * scale)), max(out_w, round(width * scale))

    def placement(self, size: tuple[int, int]) -> Placement:
        """Where the model's input sits in an upright image of ``size`` (height, width)."""
        height, width = size
        new_h, new_w = self._resized_shape(height, width)
        out_h, out_w = self.input_size
        top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
        crop = (top / new_h * height, left / new_w * width, out_h / new_h * height,
                out_w / new_w * width)  # fmt: skip
        return Placement(original_size=(height, width), crop=crop)

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, Placement]:
        """The normalised float32 tensor ``(3, H, W)`` and where it sits in ``image``."""
        width, height = image.size
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())
        x = pixels.permute(2, 0, 1)[None].float() / 255.0
        out_h, out_w = self.input_size
        new_h, new_w = self._resized_shape(height, width)
        x = _resize(x, (new_h, new_w))
        top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
        x = x[:, :, top : top + out_h, left : left + out_w]
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        x = ((x - mean) / std)[0].contiguous()
        return x, self.placement((height, width))


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def place_heatmap(
    heatmap: torch.Tensor, placement: Placement, out_size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Resize heatmaps ``(T, h, w)`` onto the original picture (zero outside a crop).

    ``out_size`` (height, width) scales the whole picture; by default the
    original size, so the map overlays the image the caller sent.
    """
    height, width = placement.original_size
    out_h, out_w = out_size or (height, width)
    top, left, crop_h, crop_w = placement.crop
    sy, sx = out_h / height, out_w / width
    y0, x0 = round(top * sy), round(left * sx)
    h = max(1, min(out_h - y0, round(crop_h * sy)))
    w = max(1, min(out_w - x0, round(crop_w * sx)))
    resized = F.interpolate(
        heatmap[:, None].float(), size=(h, w), mode="bilinear", align_corners=False
    )[:, 0].clamp(0.0, 1.0)
    if (y0, x0, h, w) == (0, 0, out_h, out_w):
        return resized
    canvas = heatmap.new_zeros((heatmap.shape[0], out_h, out_w), dtype=torch.float32)
    canvas[:, y0 : y0 + h, x0 : x0 + w] = resized
    return canvas


def validate_tensor(array: np.ndarray) -> torch.Tensor:
    """A caller's preprocessed tensor: float32 ``(3, H, W)`` (or ``(1, 3, H, W)``), finite."""
    if array.dtype != np.float32:
        raise InvalidArgument(f"tensor input must be float32, got {array.dtype}")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != 3:
        raise InvalidArgument(f"tensor input must have shape (3, H, W), got {tuple(array.shape)}")
    if not all(MIN_SIDE <= side <= MAX_SIDE for side in array.shape[1:]):
        raise InvalidArgument(
            f"tensor height and width must be in [{MIN_SIDE}, {MAX_SIDE}], got {array.shape[1:]}"
        )
    if not np.isfinite(array).all():
        raise InvalidArgument("tensor input contains NaN or infinite values")
    return torch.from_numpy(np.array(array, dtype=np.float32, copy=True))


def convert_heatmap(heatmap: torch.Tensor, dtype: str) -> np.ndarray:
    """A heatmap in [0, 1] as float32, float16, or uint8 (``round(255 * h)``)."""
    values = heatmap.detach().float().clamp(0.0, 1.0).cpu().numpy()
    if dtype == "float32":
        return values.astype(np.float32)
    if dtype == "float16":
        return values.astype(np.float16)
    if dtype == "uint8":
        return np.rint(values * 255.0).astype(np.uint8)
    raise InvalidArgument(f"heatmap dtype must be float32, float16 or uint8, got {dtype!r}")
