"""Users' own models for tests: torchvision weights entries under a temporary TORCH_HOME,
timm weights folders, and real pictures of several sizes and aspect ratios.

Every model has seeded random weights; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
import torchvision
from PIL import Image

from camserve_server import demo

# (height, width): landscape, portrait, square, a strip, smaller than the crop.
PICTURE_SIZES = ((300, 400), (400, 300), (257, 257), (225, 999), (150, 90))


def entry_file(torch_home: Path, entry: torchvision.models.WeightsEnum) -> Path:
    """Where torch hub keeps ``entry``'s file under ``torch_home``."""
    return torch_home / "hub" / "checkpoints" / Path(urlparse(entry.url).path).name


def save_entry(torch_home: Path, entry: torchvision.models.WeightsEnum, seed: int = 0) -> Path:
    """The entry's architecture with seeded random weights, saved where torch hub would
    keep the entry's file."""
    torch.manual_seed(seed)
    builder = torchvision.models.get_model_builder(_arch_of(entry))
    module = builder(num_classes=len(entry.meta["categories"]))
    path = entry_file(torch_home, entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), path)
    return path


def _arch_of(entry: torchvision.models.WeightsEnum) -> str:
    for name in torchvision.models.list_models():
        if torchvision.models.get_model_weights(name) is type(entry):
            return str(name)
    raise AssertionError(f"no architecture for {entry}")


def pictures() -> list[Image.Image]:
    """The demo's sample pictures, each at every size of ``PICTURE_SIZES``, and a smooth
    colour gradient at one."""
    samples = sorted(Path(demo.__file__).parent.joinpath("samples").glob("*.png"))
    found = []
    for index, path in enumerate(samples[:3]):
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        for height, width in PICTURE_SIZES[index:] + PICTURE_SIZES[:index]:
            found.append(rgb.resize((width, height), Image.Resampling.LANCZOS))
    y = np.linspace(0, 255, 240)[:, None]
    x = np.linspace(0, 255, 320)[None, :]
    gradient = np.stack([y + 0 * x, x + 0 * y, (y + x) / 2], axis=-1).round().astype(np.uint8)
    found.append(Image.fromarray(gradient))
    return found
