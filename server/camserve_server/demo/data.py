"""A synthetic data set for the demo model: shapes at random places on textured backgrounds.

Every object's bounding box and pixel mask are known, so "where the network looked" can be
checked (the pointing game). numpy and pillow only; deterministic for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ("circle", "square", "triangle", "cross", "ring", "star")
IMAGE_SIZE = 64
MIN_OBJECT, MAX_OBJECT = 16, 28
MARGIN = 2  # the least gap between an object's box and the image border, in pixels

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Sample:
    """An ``(H, W, 3)`` uint8 image, its class, the object's box and its ``(H, W)`` bool mask.

    ``box`` is ``(x0, y0, x1, y1)`` with inclusive ends: the object's pixels lie in
    ``image[y0 : y1 + 1, x0 : x1 + 1]``.
    """

    image: np.ndarray
    label: int
    box: Box
    mask: np.ndarray


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A float ``(size, size, 3)`` texture: noise, stripes, a gradient or a checker board."""
    kind = rng.integers(4)
    base = rng.integers(40, 216, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 0:  # noise
        texture = rng.normal(0, 28, (size, size, 1))
    elif kind == 1:  # stripes
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(4, 12)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period * 2 * math.pi
        texture = (np.sin(phase) * 30)[..., None]
    elif kind == 2:  # gradient
        angle = rng.uniform(0, 2 * math.pi)
        ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / size
        texture = (ramp * 70)[..., None]
    else:  # checker
        cell = int(rng.integers(4, 10))
        texture = ((((xx // cell) + (yy // cell)) % 2) * 50 - 25)[..., None]
    tint = rng.normal(0, 12, (1, 1, 3))
    return np.clip(base + texture + tint, 0, 255)


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def shape_mask(label: int, box: Box, size: int = IMAGE_SIZE) -> np.ndarray:
    """The ``(size, size)`` bool mask of a class-``label`` shape drawn in ``box``."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    width = max(3, int(r / 2.5))
    name = CLASS_NAMES[label]
    if name == "circle":
        draw.ellipse(box, fill=255)
    elif name == "square":
        draw.rectangle(box, fill=255)
    elif name == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=255)
    elif name == "cross":
        draw.rectangle((cx - width / 2, y0, cx + width / 2, y1), fill=255)
        draw.rectangle((x0, cy - width / 2, x1, cy + width / 2), fill=255)
    elif name == "ring":
        draw.ellipse(box, outline=255, width=width)
    else:
        draw.polygon(_star(cx, cy, r), fill=255)
    return np.asarray(canvas) > 0


def make_sample(rng: np.random.Generator, label: int | None = None) -> Sample:
    """One image with one object of class ``label`` (random when None)."""
    label = int(rng.integers(len(CLASS_NAMES))) if label is None else label
    background = _background(rng, IMAGE_SIZE)
    side = int(rng.integers(MIN_OBJECT, MAX_OBJECT + 1))
    x0 = int(rng.integers(MARGIN, IMAGE_SIZE - MARGIN - side + 1))
    y0 = int(rng.integers(MARGIN, IMAGE_SIZE - MARGIN - side + 1))
    box = (x0, y0, x0 + side - 1, y0 + side - 1)
    under = background[y0 : y0 + side, x0 : x0 + side].mean(axis=(0, 1))
    # Mostly a colour that stands out from the background under the object.
    color = np.array(
        [255 - m if rng.random() < 0.7 else float(rng.integers(0, 256)) for m in under]
    )
    mask = shape_mask(label, box)
    image = np.where(mask[..., None], color, background).astype(np.uint8)
    return Sample(image=image, label=label, box=box, mask=mask)


def make_dataset(n: int, seed: int) -> list[Sample]:
    """``n`` samples with balanced classes (in turn), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    return [make_sample(rng, i % len(CLASS_NAMES)) for i in range(n)]
