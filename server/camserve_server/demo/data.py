"""A synthetic data set for the demo model: shapes at random places on textured backgrounds.

Every object's bounding box is known, so "where the network looked" can be
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


@dataclass(frozen=True)
class Sample:
    """One image ``(H, W, 3)`` uint8, its class, and the object's box ``(x0, y0, x1, y1)``."""

    image: np.ndarray
    label: int
    box: tuple[int, int, int, int]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
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


def _draw(draw: ImageDraw.ImageDraw, label: int, box: tuple[int, int, int, int], color: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    width = max(3, int(r / 2.5))
    name = CLASS_NAMES[label]
    if name == "circle":
        draw.ellipse(box, fill=color)
    elif name == "square":
        draw.rectangle(box, fill=color)
    elif name == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=color)
    elif name == "cross":
        draw.rectangle((cx - width / 2, y0, cx + width / 2, y1), fill=color)
        draw.rectangle((x0, cy - width / 2, x1, cy + width / 2), fill=color)
    elif name == "ring":
        draw.ellipse(box, outline=color, width=width)
    else:
        draw.polygon(_star(cx, cy, r), fill=color)


def make_sample(rng: np.random.Generator, label: int | None = None) -> Sample:
    """One image with one object of class ``label`` (random when None)."""
    label = int(rng.integers(len(CLASS_NAMES))) if label is None else label
    background = _background(rng, IMAGE_SIZE)
    side = int(rng.integers(MIN_OBJECT, MAX_OBJECT + 1))
    x0 = int(rng.integers(0, IMAGE_SIZE - side + 1))
    y0 = int(rng.integers(0, IMAGE_SIZE - side + 1))
    box = (x0, y0, x0 + side - 1, y0 + side - 1)
    mean = background[y0 : y0 + side, x0 : x0 + side].mean(axis=(0, 1))
    # A colour that stands out from the background under the object.
    color = tuple(int(255 - m if rng.random() < 0.7 else rng.integers(0, 256)) for m in mean)
    canvas = Image.fromarray(background.astype(np.uint8))
    _draw(ImageDraw.Draw(canvas), label, box, color)  # type: ignore[arg-type]
    return Sample(image=np.asarray(canvas, dtype=np.uint8).copy(), label=label, box=box)


def make_dataset(n: int, seed: int) -> list[Sample]:
    """``n`` samples with balanced classes, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    return [make_sample(rng, i % len(CLASS_NAMES)) for i in range(n)]
