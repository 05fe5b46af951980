"""The evaluation's images as the model's inputs: a request's images decoded and
preprocessed as every explanation's are, or an image set's kept pictures, which are
already the model's view (normalised again, never resized)."""

from __future__ import annotations

import numpy as np
import torch

from ..models.imaging import decode_image
from ..models.loading import LoadedModel
from ..query import ImageSource
from .plan import Picture


def request_pictures(
    loaded: LoadedModel, images: tuple[ImageSource, ...], max_pixels: int
) -> list[Picture]:
    """Each image's input ``(3, H, W)`` and where it sits on its picture."""
    return [source.model_input(loaded, max_pixels) for source in images]


def kept_pictures(loaded: LoadedModel, kept: list[bytes], max_pixels: int) -> list[Picture]:
    """A set's kept pictures (8-bit RGB at the model's input size) normalised as the model
    expects; their boxes are in those pixels already."""
    mean = torch.tensor(loaded.preprocess.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(loaded.preprocess.std, dtype=torch.float32).view(3, 1, 1)
    pictures: list[Picture] = []
    for blob in kept:
        picture = decode_image(blob, max_pixels=max_pixels)
        rgb = np.asarray(picture.convert("RGB") if picture.mode != "RGB" else picture)
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255.0)
        pictures.append(((x - mean) / std, None))
    return pictures
