"""Benchmark inputs: fresh random images (every cold request sees a new image), sent as
JPEG bytes or as preprocessed float32 tensors (``input.tensor``, no decode on the server).

Messages are built before the clock starts, so client-side encoding is never timed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
from PIL import Image

from camserve import tensors
from camserve.v1 import explain_pb2 as pb
from camserve_server.models.imaging import Preprocess, decode_image

InputKind = Literal["jpeg", "tensor"]
INPUT_KINDS: tuple[InputKind, ...] = ("jpeg", "tensor")


def jpeg_images(count: int, size: int, seed: int) -> list[bytes]:
    """``count`` distinct smooth-noise JPEG images of ``size`` x ``size``."""
    rng = np.random.default_rng(seed)
    return [_jpeg(rng, size) for _ in range(count)]


def _jpeg(rng: np.random.Generator, size: int) -> bytes:
    coarse = rng.integers(0, 256, (max(1, size // 8), max(1, size // 8), 3), dtype=np.uint8)
    picture = Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def image_input(image: bytes, kind: InputKind, preprocess: Preprocess) -> pb.ImageInput:
    """The request's ``input``: the JPEG as stored, or the model's preprocessed float32
    ``(3, H, W)`` tensor of it (what the server would compute from the JPEG)."""
    if kind == "jpeg":
        return pb.ImageInput(encoded=image)
    x, _ = preprocess(decode_image(image))
    return pb.ImageInput(tensor=tensors.to_proto(x.numpy(), dtype=np.float32))


def image_inputs(
    images: Sequence[bytes], kind: InputKind, preprocess: Preprocess
) -> list[pb.ImageInput]:
    """``image_input`` of each image, built ahead of any timing."""
    return [image_input(image, kind, preprocess) for image in images]


class FreshInputs:
    """Distinct images: a pool built ahead of time, then (duration mode only, once the
    pool is spent) new ones made on demand; ``made_during_run`` counts the latter."""

    def __init__(
        self, pool: Sequence[pb.ImageInput], kind: InputKind, preprocess: Preprocess, size: int
    ) -> None:
        self._pool: Iterator[pb.ImageInput] = iter(pool)
        self._kind, self._preprocess, self._size = kind, preprocess, size
        self._rng = np.random.default_rng(len(pool) + 7919)
        self.made_during_run = 0

    def __iter__(self) -> Iterator[pb.ImageInput]:
        return self

    def __next__(self) -> pb.ImageInput:
        try:
            return next(self._pool)
        except StopIteration:
            self.made_during_run += 1
            return image_input(_jpeg(self._rng, self._size), self._kind, self._preprocess)
