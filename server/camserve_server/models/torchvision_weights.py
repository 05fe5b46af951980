"""A torchvision weights entry as a model's ``weights``, read from torch hub's checkpoint
folder and never downloaded.

``ResNet50_Weights.IMAGENET1K_V2``, or ``IMAGENET1K_V2`` / ``DEFAULT`` looked up in the
architecture's enum (``torchvision.models.get_model_weights``). Its file is
``torch.hub.get_dir()/checkpoints/<the file name in the entry's URL>`` (that is,
``$TORCH_HOME/hub/checkpoints``), read with ``torch.load(weights_only=True)``. The
builder is called with the entry, as ``torchvision.models.get_model(arch,
weights=entry)`` would be, so whatever it does for an entry (DenseNet's renamed keys,
Inception's input transform, the class count) happens here too; only the reading is
ours. Labels are ``meta["categories"]``; preprocessing is ``transforms()``: the shorter
side resized to ``resize_size`` with its interpolation, a centre crop of ``crop_size``,
then ``mean`` and ``std``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import _api as torchvision_api
from torchvision.models import get_model_weights
from torchvision.transforms._presets import ImageClassification

from ..errors import InvalidArgument, choices
from .preprocess import INTERPOLATIONS
from .source_defaults import SourceDefaults
from .weights import StateDict

ENTRY_NAME = re.compile(r"^(?:[A-Za-z0-9_]+_Weights\.)?[A-Z][A-Z0-9_]*$")
_READER_LOCK = threading.Lock()


def is_entry_name(value: str) -> bool:
    """Whether ``weights`` names an entry (``X_Weights.NAME``, ``NAME``) rather than a file."""
    return bool(ENTRY_NAME.match(value))


def resolve_entry(model: str, arch: str, value: str) -> torchvision.models.WeightsEnum:
    """The entry ``value`` names among torchvision model ``arch``'s weights."""
    enum: Any = get_model_weights(arch)
    enum_name, _, member = value.rpartition(".")
    members = list(enum.__members__)
    if enum_name and enum_name != enum.__name__:
        raise InvalidArgument(
            f"model {model!r}: weights {value!r} are not an entry of architecture {arch!r}, "
            f"whose entries are {enum.__name__}.{{{choices(members)}}}"
        )
    if member not in enum.__members__:
        raise InvalidArgument(
            f"model {model!r}: architecture {arch!r} has no weights entry {value!r} "
            f"(its entries: {choices(members)})"
        )
    entry: torchvision.models.WeightsEnum = enum[member]
    return entry


def entry_label(entry: torchvision.models.WeightsEnum) -> str:
    """``ResNet50_Weights.IMAGENET1K_V2``: the entry's full name (``DEFAULT`` resolved)."""
    return f"{type(entry).__name__}.{entry.name}"


def checkpoint_path(entry: torchvision.models.WeightsEnum) -> Path:
    """Where torch hub keeps the entry's file: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(entry.url).path).name


def check_checkpoint(model: str, entry: torchvision.models.WeightsEnum) -> Path:
    """The entry's file, or one line saying where it must be and where it comes from."""
    path = checkpoint_path(entry)
    if not path.is_file():
        raise InvalidArgument(
            f"model {model!r}: weights {entry_label(entry)} need the file {path}, which is "
            f"missing: put a copy of {entry.url} there (the server never downloads; "
            "TORCH_HOME chooses the folder)"
        )
    return path


def entry_classes(entry: torchvision.models.WeightsEnum) -> int:
    """The number of classes the entry was trained for."""
    return len(entry.meta["categories"])


def entry_defaults(model: str, entry: torchvision.models.WeightsEnum) -> SourceDefaults:
    """The entry's labels and its ``transforms()`` as preprocessing settings."""
    preset = entry.transforms()
    if not isinstance(preset, ImageClassification):
        raise InvalidArgument(
            f"model {model!r}: weights {entry_label(entry)} are not for image classification "
            f"(their transforms are {type(preset).__name__})"
        )
    interpolation = preset.interpolation.value
    if interpolation not in INTERPOLATIONS:
        raise InvalidArgument(
            f"model {model!r}: weights {entry_label(entry)} resize with {interpolation}; "
            "set interpolation to 'bilinear' or 'bicubic' in the config"
        )
    crop = int(preset.crop_size[0])
    return SourceDefaults(
        input_size=(crop, crop),
        mean=_three(preset.mean),
        std=_three(preset.std),
        resize_mode="resize_crop",
        resize_size=int(preset.resize_size[0]),
        interpolation=interpolation,
        labels=tuple(entry.meta["categories"]),
    )


def _three(values: list[float]) -> tuple[float, float, float]:
    first, second, third = (float(v) for v in values)
    return first, second, third


def build_with_entry(
    arch: str,
    entry: torchvision.models.WeightsEnum,
    state: StateDict,
    kwargs: Mapping[str, Any],
) -> nn.Module:
    """torchvision's builder for ``arch`` called with ``entry``, reading ``state`` (the
    entry's file, already read safely) where it would fetch the entry's URL."""

    def read(url: str, *args: object, **options: object) -> dict[str, torch.Tensor]:
        if url != entry.url:
            raise InvalidArgument(f"{arch} asked for {url}, not its entry's {entry.url}")
        return dict(state)  # a copy: some builders rename keys in place

    with _reading_with(read):
        module: nn.Module = torchvision.models.get_model(arch, weights=entry, **kwargs)
    return module


@contextmanager
def _reading_with(read: Callable[..., dict[str, torch.Tensor]]) -> Iterator[None]:
    """``WeightsEnum.get_state_dict`` calls ``read`` instead of torch hub's downloader,
    whose ``torch.load`` is not ``weights_only``; restored afterwards."""
    with _READER_LOCK:
        original = torchvision_api.load_state_dict_from_url
        torchvision_api.load_state_dict_from_url = read
        try:
            yield
        finally:
            torchvision_api.load_state_dict_from_url = original
