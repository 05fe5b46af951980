"""Benchmark inputs: fresh random JPEG images (every cold request sees a new image)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def jpeg_images(count: int, size: int, seed: int) -> list[bytes]:
    """``count`` distinct smooth-noise JPEG images of ``size`` x ``size``."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        picture = Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images
