"""Images in and out of a set: what the model sees, what is kept, and what is cut from it.

An indexed image is decoded and preprocessed by the same path as every explanation
(size limits, EXIF orientation, the model's resize and normalisation). What a member
keeps is the picture the model saw, ``x * std + mean`` as 8-bit RGB at the model's
input size, encoded as PNG: receptive-field boxes are in those pixels, so a patch is
a plain crop. A ``PIXELS_SIDE``-square thumbnail of it is the member's pixel-space
vector for pixel neighbours.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..models.imaging import decode_image
from ..models.loading import LoadedModel
from ..runtime.cache import image_key

PIXELS_SIDE = 32  # side of the thumbnail compared by pixel-space neighbours
MAX_THUMBNAIL_SIDE = 256


@dataclass(frozen=True)
class PreparedImage:
    """One decoded image: the model input, the kept PNG and the pixel thumbnail."""

    image_hash: str
    x: torch.Tensor  # float32 (3, H, W), normalised
    kept_png: bytes
    pixels: np.ndarray  # uint8 (PIXELS_SIDE, PIXELS_SIDE, 3)


def model_view(loaded: LoadedModel, x: torch.Tensor) -> Image.Image:
    """The RGB picture the model saw: the preprocessed input with its normalisation undone."""
    mean = torch.tensor(loaded.preprocess.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(loaded.preprocess.std, dtype=torch.float32).view(3, 1, 1)
    rgb = (x.detach().float().cpu() * std + mean).clamp(0.0, 1.0).mul(255.0).round()
    array = rgb.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(array, mode="RGB")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def pixel_vector(view: Image.Image) -> np.ndarray:
    """The pixel-space thumbnail: the view box-filtered to ``PIXELS_SIDE`` square, uint8."""
    small = view.resize((PIXELS_SIDE, PIXELS_SIDE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8).copy()


def prepare(loaded: LoadedModel, encoded: bytes, max_pixels: int) -> PreparedImage:
    """Decode (within ``max_pixels``) and preprocess ``encoded`` for ``loaded``."""
    picture = decode_image(encoded, max_pixels=max_pixels)
    x, _ = loaded.preprocess(picture)
    view = model_view(loaded, x)
    return PreparedImage(
        image_hash=image_key(encoded), x=x, kept_png=png(view), pixels=pixel_vector(view)
    )


def open_kept(kept: bytes) -> Image.Image:
    """A member's kept picture, as RGB."""
    with Image.open(io.BytesIO(kept)) as opened:
        return opened.convert("RGB")


def cut_patch(kept: bytes, box: tuple[int, int, int, int]) -> bytes:
    """The ``(x0, y0, x1, y1)`` region (x1, y1 exclusive) of a kept picture, as PNG."""
    return png(open_kept(kept).crop(box))


def thumbnail(kept: bytes, side: int) -> bytes:
    """A kept picture scaled so its longer side is ``side`` pixels, as PNG."""
    picture = open_kept(kept)
    width, height = picture.size
    scale = side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return png(picture.resize(size, Image.Resampling.BICUBIC))
