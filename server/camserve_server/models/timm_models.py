"""timm models: ``arch = "timm:<model name>"``, built with
``timm.create_model(name, pretrained=False, num_classes=..., **kwargs)``; never downloaded.

Their preprocessing comes from the model's ``pretrained_cfg``
(``timm.data.resolve_model_data_config``): input size, mean, std, interpolation, and
for ``crop_mode = "center"`` the shorter side resized to ``floor(size / crop_pct)``
then a centre crop, as timm's eval transform does (for a non-square input, the shorter
side's size); other crop modes resize the whole picture to the input size. An
interpolation other than bilinear or bicubic is left to the config.

A weights folder in timm's layout (``save_for_hf``: ``config.json`` + ``model.safetensors``)
adds what its ``config.json`` says: ``architecture``, ``num_classes``, ``label_names``,
``model_args`` (factory keyword arguments) and ``pretrained_cfg``.

timm is an optional extra (``pip install 'camserve[timm]'``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from ..errors import InvalidArgument
from .preprocess import INTERPOLATIONS
from .source_defaults import SourceDefaults

INSTALL_HINT = "pip install 'camserve[timm]'"


@dataclass(frozen=True)
class TimmFolderConfig:
    """What a timm weights folder's ``config.json`` says about the model."""

    architecture: str | None = None
    num_classes: int | None = None
    labels: tuple[str, ...] | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)


def import_timm(model: str, arch: str) -> ModuleType:
    """The ``timm`` package, or one line saying to install the extra."""
    try:
        import timm
    except ImportError:
        raise InvalidArgument(
            f"model {model!r}: arch {arch!r} needs timm, which is not installed: {INSTALL_HINT}"
        ) from None
    return timm


def check_model_name(model: str, arch: str, name: str) -> None:
    """One line when timm has no model called ``name``."""
    timm = import_timm(model, arch)
    if not name or not timm.is_model(name):
        raise InvalidArgument(
            f"model {model!r}: timm has no model {name!r} "
            '(timm.list_models() lists them; arch = "timm:<model name>")'
        )


def create_model(
    model: str, arch: str, name: str, arguments: Mapping[str, Any], cfg: Mapping[str, Any]
) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **arguments)``, with ``cfg`` over the
    model's ``pretrained_cfg`` when given."""
    timm = import_timm(model, arch)
    overlay = {"pretrained_cfg_overlay": dict(cfg)} if cfg else {}
    module: nn.Module = timm.create_model(name, pretrained=False, **overlay, **arguments)
    return module


def timm_defaults(module: object, labels: tuple[str, ...] | None) -> SourceDefaults:
    """The preprocessing the model's ``pretrained_cfg`` describes, and ``labels``."""
    from timm.data.config import resolve_model_data_config

    cfg = resolve_model_data_config(module)  # type: ignore[no-untyped-call]
    _, height, width = (int(side) for side in cfg["input_size"])
    centre = cfg.get("crop_mode", "center") == "center"
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    interpolation = cfg.get("interpolation")
    return SourceDefaults(
        input_size=(height, width),
        mean=_three(cfg["mean"]),
        std=_three(cfg["std"]),
        resize_mode="resize_crop" if centre else "resize",
        resize_size=math.floor(min(height, width) / crop_pct) if centre else None,
        interpolation=interpolation if interpolation in INTERPOLATIONS else None,
        labels=labels,
    )


def _three(values: Any) -> tuple[float, float, float] | None:
    items = [float(v) for v in values]
    return (items[0], items[1], items[2]) if len(items) == 3 else None


def read_folder_config(model: str, folder: Path) -> TimmFolderConfig:
    """The ``config.json`` in a timm weights folder; empty when there is none."""
    path = folder / "config.json"
    if not path.is_file():
        return TimmFolderConfig()
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"model {model!r}: cannot read {path}: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"model {model!r}: {path} is not a JSON object")
    pretrained_cfg = document.get("pretrained_cfg")
    if not isinstance(pretrained_cfg, dict):  # the older single-table layout
        pretrained_cfg = {
            k: v for k, v in document.items() if k not in ("architecture", "num_features")
        }
    names = document.get("label_names", pretrained_cfg.get("label_names", document.get("labels")))
    num_classes = document.get("num_classes", pretrained_cfg.get("num_classes"))
    model_args = document.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise InvalidArgument(f"model {model!r}: model_args in {path} is not a JSON object")
    cfg = {k: v for k, v in pretrained_cfg.items() if k not in ("label_names", "labels")}
    return TimmFolderConfig(
        architecture=document.get("architecture"),
        num_classes=int(num_classes) if num_classes is not None else None,
        labels=_labels(names),
        model_args={k: v for k, v in model_args.items() if k != "num_classes"},
        pretrained_cfg=cfg,
    )


def _labels(names: Any) -> tuple[str, ...] | None:
    """``label_names``: a list by class, or a table from class index to name."""
    if isinstance(names, list):
        return tuple(str(name) for name in names)
    if isinstance(names, dict):
        try:
            by_index = {int(index): str(name) for index, name in names.items()}
        except ValueError:
            return None
        return tuple(by_index.get(i, str(i)) for i in range(max(by_index, default=-1) + 1))
    return None
