"""A model from ``arch``: architecture, weights, recommended preprocessing and labels
resolved once; one module built from them per device.

Its weights are a torchvision weights entry (``torchvision_weights``), a state dict file
or safetensors folder (``weights``), or none: random weights, seed 0, said in a warning
at start. The digest, part of every cache key, is the sha256 of the weights file(s);
with ``[models.kwargs]`` the kwargs are hashed in too, since they may change what the
same weights compute. Without weights it hashes the architecture, classes and kwargs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ModelSpec
from ..errors import InvalidArgument
from . import timm_models, torchvision_weights
from .model_source import RANDOM_SOURCE, ModelSource, Module, file_source
from .source_defaults import NO_DEFAULTS, SourceDefaults
from .sources import (
    Architecture,
    build_architecture,
    call_factory,
    check_kwargs,
    parse_architecture,
)
from .weights import files_digest, load_errors, load_into, read_state_dict, weights_files


def arch_source(spec: ModelSpec) -> ModelSource:
    """Everything about ``spec``'s model but the modules, checked before any is built."""
    assert spec.arch is not None
    architecture = parse_architecture(spec.name, spec.arch)
    kwargs = check_kwargs(architecture, spec.kwargs)
    weights = spec.weights
    if not weights:
        return _random(spec, architecture, kwargs)
    if torchvision_weights.is_entry_name(weights):
        if architecture.kind == "torchvision":
            return _with_entry(spec, architecture, kwargs, weights)
        if not spec.path(weights).exists():
            raise InvalidArgument(
                f"model {spec.name!r}: weights {weights!r} name a torchvision entry (there is "
                f"no such file), which goes with a torchvision arch, not {spec.arch!r}"
            )
    return _with_file(spec, architecture, kwargs, weights)


def _random(spec: ModelSpec, architecture: Architecture, kwargs: dict[str, Any]) -> ModelSource:
    arguments = _arguments(spec.num_classes, kwargs)
    init = f"init:{spec.arch}:{spec.num_classes}"
    return ModelSource(
        build=lambda _device: build_architecture(architecture, arguments),
        defaults_of=_defaults_of(architecture, None),
        digest=hashlib.sha256((init + _kwargs_text(kwargs)).encode()).hexdigest(),
        weights_source=RANDOM_SOURCE,
    )


def _with_entry(
    spec: ModelSpec, architecture: Architecture, kwargs: dict[str, Any], weights: str
) -> ModelSource:
    entry = torchvision_weights.resolve_entry(spec.name, architecture.name, weights)
    label = torchvision_weights.entry_label(entry)
    classes = torchvision_weights.entry_classes(entry)
    if spec.num_classes is not None and spec.num_classes != classes:
        raise InvalidArgument(
            f"model {spec.name!r}: num_classes = {spec.num_classes}, but weights {label} "
            f"have {classes} classes: leave num_classes out (or set it to {classes})"
        )
    defaults = torchvision_weights.entry_defaults(spec.name, entry)
    path = torchvision_weights.check_checkpoint(spec.name, entry)
    digest = files_digest(spec.name, [path])
    state = read_state_dict(spec.name, path)

    def build(_device: torch.device) -> nn.Module:
        def factory(**arguments: Any) -> nn.Module:
            try:
                return torchvision_weights.build_with_entry(
                    architecture.name, entry, state, arguments
                )
            except RuntimeError as exc:  # the builder's strict load_state_dict
                raise InvalidArgument(
                    f"model {spec.name!r}: weights {path} do not fit architecture "
                    f"{spec.arch!r}: {load_errors(exc)}"
                ) from None

        return call_factory(architecture, factory, kwargs)

    return ModelSource(
        build=build,
        defaults_of=lambda _module: defaults,
        digest=_with_kwargs(digest, kwargs),
        weights_source=f"torchvision {label} ({path.name}, sha256 {digest[:12]})",
    )


def _with_file(
    spec: ModelSpec, architecture: Architecture, kwargs: dict[str, Any], weights: str
) -> ModelSource:
    path = spec.path(weights)
    files = weights_files(spec.name, path)
    digest = files_digest(spec.name, files)
    folder = (
        timm_models.read_folder_config(spec.name, path)
        if architecture.kind == "timm" and path.is_dir()
        else timm_models.TimmFolderConfig()
    )
    _check_folder(spec, architecture, folder, path)
    num_classes = spec.num_classes if spec.num_classes is not None else folder.num_classes
    arguments = _arguments(num_classes, {**folder.model_args, **kwargs})
    state = read_state_dict(spec.name, path)

    def build(_device: torch.device) -> nn.Module:
        module = build_architecture(architecture, arguments, folder.pretrained_cfg)
        load_into(spec.name, architecture.arch, module, state, path)
        return module

    return ModelSource(
        build=build,
        defaults_of=_defaults_of(architecture, folder.labels),
        digest=_with_kwargs(digest, kwargs),
        weights_source=file_source(path, digest),
    )


def _check_folder(
    spec: ModelSpec, architecture: Architecture, folder: timm_models.TimmFolderConfig, path: Path
) -> None:
    """A timm folder's ``config.json`` must describe the configured model."""
    named = folder.architecture
    if named and named.split(".")[0] != architecture.name.split(".")[0]:
        raise InvalidArgument(
            f"model {spec.name!r}: weights {path} are for timm architecture {named!r} "
            f"(their config.json), not {architecture.name!r}"
        )
    if (
        None not in (spec.num_classes, folder.num_classes)
        and spec.num_classes != folder.num_classes
    ):
        raise InvalidArgument(
            f"model {spec.name!r}: num_classes = {spec.num_classes}, but weights {path} have "
            f"{folder.num_classes} classes (their config.json): leave num_classes out"
        )


def _defaults_of(
    architecture: Architecture, labels: tuple[str, ...] | None
) -> Callable[[Module], SourceDefaults]:
    if architecture.kind != "timm":
        return lambda _module: NO_DEFAULTS
    return lambda module: timm_models.timm_defaults(module, labels)


def _arguments(num_classes: int | None, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {**({"num_classes": num_classes} if num_classes else {}), **kwargs}


def _kwargs_text(kwargs: Mapping[str, Any]) -> str:
    return f":{json.dumps(kwargs, sort_keys=True, default=str)}" if kwargs else ""


def _with_kwargs(digest: str, kwargs: Mapping[str, Any]) -> str:
    """The files' digest, alone without kwargs (so it is ``sha256sum``'s), else with them."""
    if not kwargs:
        return digest
    return hashlib.sha256((digest + _kwargs_text(kwargs)).encode()).hexdigest()
