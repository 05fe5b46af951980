"""Build the models a config names: torchvision builders (with their weights entries),
timm models, factories in code, TorchScript, ``torch.export`` archives (``.pt2``) and
ONNX graphs (run by onnxruntime).

Where a model built from ``arch`` comes from, its weights included, is ``arch_model``;
reading weights (state dicts and safetensors, never pickle) is ``weights``. TorchScript,
``.pt2`` and ONNX files carry their own weights. The weights digest (sha256 of the
file) is part of every cache key, so new weights never read old activations. A model
without weights serves its seeded random initialisation, and says so in a warning.

A model that cannot be built is ``InvalidArgument`` naming the model and the file, in
one line the operator can act on: ``camserve-server`` prints it and exits 2.

What each format serves (``supported_methods``): ``torch`` and ``exported``
every method their structure allows; ``torchscript`` the methods that need no
layer access; ``onnx`` the forward-only methods: occlusion, the embedding, and
those that read a layer's activation in a forward pass (Score-CAM, Ablation-CAM,
Eigen-CAM, feature maps, channel profile).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import ModelSpec
from ..errors import InvalidArgument, NotFound, choices
from ..methods import METHODS
from ..methods.chunking import memory_budget
from .arch_model import arch_source
from .explainable import ExplainableModel
from .exported import load_exported
from .imaging import Preprocess
from .model_source import ModelSource, file_source
from .onnx_model import OnnxClassifier
from .source_defaults import NO_DEFAULTS, labels_for, preprocess_for
from .weights import files_digest

log = logging.getLogger(__name__)

# Methods that patch the model's ReLUs or read a convolution's weights.
_NEEDS_MODULES = ("guided_backprop", "deconvnet", "guided_gradcam", "filters")


@dataclass
class LoadedModel:
    """A configured model: one replica per device, its preprocessing, labels and methods."""

    name: str
    format: str
    replicas: dict[str, ExplainableModel]
    preprocess: Preprocess
    labels: list[str] | None
    weights_digest: str
    methods: tuple[str, ...]
    weights_source: str = ""  # a file and digest prefix, a torchvision entry, or "random, seed 0"

    @property
    def primary(self) -> ExplainableModel:
        """The first replica: every replica has the same structure."""
        return next(iter(self.replicas.values()))


def load_model(
    spec: ModelSpec,
    devices: list[torch.device],
    memory_budget_bytes: int,
    *,
    channels_last: bool = False,
) -> LoadedModel:
    """Build ``spec`` once per device and work out which methods it supports.

    ``memory_budget_bytes`` 0 (or less) sizes each replica's budget to its device."""
    file_labels = _read_labels(spec)
    fmt = model_format(spec)
    source = arch_source(spec) if fmt == "torch" else _file_source(spec, fmt)
    modules = [source.build(device) for device in devices]
    defaults = source.defaults_of(modules[0]) if modules else NO_DEFAULTS
    preprocess = preprocess_for(spec, defaults)
    labels = labels_for(file_labels, defaults)
    replicas = {}
    for device, module in zip(devices, modules, strict=True):
        replicas[str(device)] = ExplainableModel(
            module,
            input_size=preprocess.input_size,
            name=spec.name,
            labels=labels,
            default_layer=spec.default_layer,
            device=device,
            memory_budget_bytes=memory_budget(memory_budget_bytes, device),
            layer_access=fmt in ("torch", "exported"),
            channels_last=channels_last,
        )
    first = next(iter(replicas.values()))
    if source.random:
        log.warning(
            "model %r has no weights: serving random weights, seed 0 (set weights in its "
            "[[models]] table)",
            spec.name,
        )
    return LoadedModel(
        name=spec.name,
        format=fmt,
        replicas=replicas,
        preprocess=preprocess,
        labels=labels,
        weights_digest=source.digest,
        methods=supported_methods(first),
        weights_source=source.weights_source,
    )


def served_model(models: Mapping[str, LoadedModel], name: str) -> LoadedModel:
    """The served model ``name`` (empty: the only one, when one is served), or
    ``NotFound`` naming the served ones."""
    if not name and len(models) == 1:
        return next(iter(models.values()))
    loaded = models.get(name)
    if loaded is None:
        raise NotFound(f"unknown model {name!r}; served models: {choices(models)}")
    return loaded


def model_format(spec: ModelSpec) -> str:
    """``torch``, ``torchscript``, ``exported`` or ``onnx``: where the model comes from."""
    for fmt, source in (
        ("torchscript", spec.torchscript),
        ("exported", spec.exported),
        ("onnx", spec.onnx),
    ):
        if source:
            return fmt
    return "torch"


def supported_methods(model: ExplainableModel) -> tuple[str, ...]:
    """The registry's methods this model can serve, in registry order.

    Without layer outputs only layer-free methods remain (the embedding too when a
    forward-only graph provides it); without gradients only forward-only ones;
    without the modules themselves none that patch or read them.
    """
    supported = []
    for method_id, method in METHODS.items():
        layer_free = method_id == "embedding" and model.graph is not None
        if method.uses_layer and not model.layer_outputs and not layer_free:
            continue
        if method.needs_gradients and not model.gradient_access:
            continue
        if method_id in _NEEDS_MODULES and not model.layer_access:
            continue
        try:
            method.check_model(model)
        except InvalidArgument:
            continue
        supported.append(method_id)
    return tuple(supported)


def _file_source(spec: ModelSpec, fmt: str) -> ModelSource:
    """A TorchScript, ``.pt2`` or ONNX file, which carries its own weights."""
    source = spec.torchscript or spec.exported or spec.onnx
    assert source is not None
    path = spec.path(source)
    digest = files_digest(spec.name, [path])  # a missing file: one clear line, first

    def build(device: torch.device) -> nn.Module | OnnxClassifier:
        if fmt == "onnx":
            return OnnxClassifier(path, name=spec.name, input_size=spec.input_size, device=device)
        if fmt == "exported":
            return load_exported(path, name=spec.name, input_size=spec.input_size)
        return _load_torchscript(spec.name, path)

    return ModelSource(
        build=build,
        defaults_of=lambda _module: NO_DEFAULTS,
        digest=digest,
        weights_source=file_source(path, digest),
    )


def _load_torchscript(name: str, path: Path) -> nn.Module:
    try:
        module: nn.Module = torch.jit.load(  # type: ignore[no-untyped-call]
            str(path), map_location="cpu"
        )
    except (OSError, RuntimeError, ValueError):
        raise InvalidArgument(
            f"model {name!r}: {path} is not a TorchScript archive (torch.jit.save)"
        ) from None
    return module


def _read_labels(spec: ModelSpec) -> list[str] | None:
    if not spec.labels:
        return None
    path = spec.path(spec.labels)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidArgument(f"model {spec.name!r}: cannot read labels {path}: {reason}") from None
    return [line.strip() for line in lines if line.strip()]
