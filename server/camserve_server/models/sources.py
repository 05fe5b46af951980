"""The architecture a config's ``arch`` names, and calling its factory with
``num_classes`` and ``[models.kwargs]``.

``resnet50`` or ``torchvision:resnet50``: a torchvision builder, ``weights=None``;
``timm:convnext_tiny``: ``timm.create_model(name, pretrained=False, ...)``;
``package.module:factory``: any callable in code returning an ``nn.Module``.
Keyword arguments that would fetch weights (``weights``, ``pretrained``...) are refused:
weights come from the ``weights`` setting, and nothing is ever downloaded.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torchvision
from torch import nn

from ..errors import InvalidArgument
from . import timm_models
from .weights import first_line

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
# Keyword arguments that load or fetch weights, by kind of architecture.
_WEIGHT_ARGUMENTS = {
    "torchvision": ("weights", "pretrained", "weights_backbone"),
    "timm": ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path"),
    "factory": (),
}

ArchitectureKind = Literal["torchvision", "timm", "factory"]


@dataclass(frozen=True)
class Architecture:
    """What ``arch`` names: a torchvision or timm model name, or ``module:factory``."""

    model: str  # the configured model's name, for messages
    arch: str  # as the config writes it
    kind: ArchitectureKind
    name: str


def parse_architecture(model: str, arch: str) -> Architecture:
    """``arch`` resolved to its kind, or one line saying it names nothing."""
    if arch.startswith(TIMM_PREFIX):
        name = arch[len(TIMM_PREFIX) :]
        timm_models.check_model_name(model, arch, name)
        return Architecture(model, arch, "timm", name)
    if ":" in arch and not arch.startswith(TORCHVISION_PREFIX):
        return Architecture(model, arch, "factory", arch)
    name = arch.removeprefix(TORCHVISION_PREFIX)
    if name not in torchvision.models.list_models():
        raise InvalidArgument(
            f"model {model!r}: unknown architecture {arch!r} (a torchvision model such as "
            "resnet18, 'timm:<model name>', or 'package.module:factory')"
        )
    return Architecture(model, arch, "torchvision", name)


def check_kwargs(architecture: Architecture, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``[models.kwargs]``, refused in one line where they set what has its own setting."""
    model, arch = architecture.model, architecture.arch
    if "num_classes" in kwargs:
        raise InvalidArgument(
            f"model {model!r}: set num_classes in the model's table, not in [models.kwargs]"
        )
    for name in _WEIGHT_ARGUMENTS[architecture.kind]:
        if name in kwargs:
            raise InvalidArgument(
                f"model {model!r}: [models.kwargs] may not set {name!r} for {arch!r}: weights "
                "come from the model's weights setting and are never downloaded"
            )
    return dict(kwargs)


def build_architecture(
    architecture: Architecture,
    arguments: Mapping[str, Any],
    timm_cfg: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The architecture built with ``arguments`` (``num_classes`` and the kwargs), its
    random initialisation seeded (0) so that every replica and process is the same."""
    torch.manual_seed(0)
    if architecture.kind == "timm":
        return call_factory(
            architecture,
            lambda **kw: timm_models.create_model(
                architecture.model, architecture.arch, architecture.name, kw, timm_cfg or {}
            ),
            arguments,
        )
    if architecture.kind == "torchvision":
        name = architecture.name
        return call_factory(
            architecture,
            lambda **kw: torchvision.models.get_model(name, weights=None, **kw),
            arguments,
        )
    return call_factory(architecture, _factory(architecture), arguments)


def call_factory(
    architecture: Architecture, factory: Callable[..., nn.Module], arguments: Mapping[str, Any]
) -> nn.Module:
    """``factory(**arguments)``, a failure being one line naming the argument at fault."""
    try:
        module = factory(**arguments)
    except InvalidArgument:
        raise
    except (TypeError, ValueError, AssertionError) as exc:
        raise InvalidArgument(build_error(architecture, exc, arguments)) from None
    if not isinstance(module, nn.Module):
        raise InvalidArgument(
            f"model {architecture.model!r}: {architecture.arch!r} returned a "
            f"{type(module).__name__}, not a torch.nn.Module"
        )
    return module


def build_error(
    architecture: Architecture, exc: BaseException, arguments: Mapping[str, Any]
) -> str:
    """Why the factory refused ``arguments``, in one line."""
    model, arch = architecture.model, architecture.arch
    unexpected = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
    if unexpected and unexpected.group(1) == "num_classes":
        return (
            f"model {model!r}: architecture {arch!r} takes no num_classes: "
            "leave num_classes out of its table"
        )
    if unexpected:
        return (
            f"model {model!r}: architecture {arch!r} takes no keyword argument "
            f"{unexpected.group(1)!r} (from [models.kwargs])"
        )
    given = sorted(name for name in arguments if name != "num_classes")
    settings = f" with kwargs {', '.join(given)}" if given else ""
    return f"model {model!r}: cannot build architecture {arch!r}{settings}: {first_line(exc)}"


def _factory(architecture: Architecture) -> Callable[..., nn.Module]:
    module_name, _, attribute = architecture.name.partition(":")
    try:
        factory: Callable[..., nn.Module] = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise InvalidArgument(
            f"model {architecture.model!r}: cannot import model factory {architecture.arch!r}: "
            f"{first_line(exc)}"
        ) from None
    return factory
