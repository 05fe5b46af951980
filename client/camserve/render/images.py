"""Image inputs to PIL, heatmap resizing, and heatmap overlays."""

from __future__ import annotations

import io
import os
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
from PIL import Image

from camserve.render.colormaps import apply_colormap

ImageLike: TypeAlias = Image.Image | str | os.PathLike[str] | bytes | npt.NDArray[Any]
"""A PIL image, a file path, encoded image bytes, or a uint8 (H, W, 3) or (H, W) array."""


def to_pil(image: ImageLike) -> Image.Image:
    """Any ``ImageLike`` as a new RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, bytes | bytearray | memoryview):
        with Image.open(io.BytesIO(bytes(image))) as opened:
            return opened.convert("RGB")
    if isinstance(image, str | os.PathLike):
        with Image.open(image) as opened:
            return opened.convert("RGB")
    if isinstance(image, np.ndarray):
        return _array_to_pil(image)
    raise TypeError(f"expected a PIL image, path, bytes or uint8 array, got {type(image).__name__}")


def _array_to_pil(array: npt.NDArray[Any]) -> Image.Image:
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")
    raise ValueError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")


def _as_2d(heatmap: npt.ArrayLike) -> npt.NDArray[np.float32]:
    values = np.asarray(heatmap, dtype=np.float32)
    while values.ndim > 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {np.shape(heatmap)}")
    return values


def resize_heatmap(heatmap: npt.ArrayLike, size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """A 2-D heatmap resized bilinearly to ``size`` = (width, height), as float32 (h, w).

    Leading axes of length 1 are dropped first, so (1, h, w) is accepted.
    """
    values = _as_2d(heatmap)
    width, height = size
    if values.shape == (height, width):
        return values
    resized = Image.fromarray(np.ascontiguousarray(values)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def overlay(
    image: ImageLike, heatmap: npt.ArrayLike, colormap: str = "jet", alpha: float = 0.5
) -> Image.Image:
    """Blend a [0, 1] heatmap, coloured, over an image: ``(1 - alpha) * image + alpha * colour``.

    The heatmap is resized bilinearly to the image's size where the two differ.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    base = to_pil(image)
    colours = apply_colormap(resize_heatmap(heatmap, base.size), colormap)
    pixels = np.asarray(base, dtype=np.float32)
    blend = (1.0 - alpha) * pixels + alpha * colours.astype(np.float32)
    return Image.fromarray(np.clip(np.rint(blend), 0, 255).astype(np.uint8))


def reduced(image: Image.Image, side: int) -> Image.Image:
    """``image`` reduced (Lanczos) so that its longer side is at most ``side``."""
    if side < 1:
        raise ValueError(f"side must be positive, got {side}")
    longest = max(image.size)
    if longest <= side:
        return image
    scale = side / longest
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def enlargement(size: tuple[int, int], side: int) -> int:
    """The whole factor that brings a picture of ``size`` to at least ``side`` on its longer
    side (1 for one already that large)."""
    longest = max(size)
    return -(-side // longest) if longest < side else 1


def for_display(image: Image.Image, side: int) -> Image.Image:
    """``image`` at a readable size: a smaller one enlarged by a whole factor, pixels kept
    sharp (nearest), to at least ``side`` on its longer edge; a larger one reduced
    (Lanczos) to ``side``."""
    image = reduced(image, side)
    factor = enlargement(image.size, side)
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def gray_rgb(image: Image.Image) -> Image.Image:
    """``image`` in grey, as RGB: the background of a signed overlay, as Captum draws it."""
    return image.convert("L").convert("RGB")
