"""Build the models a config names: torchvision builders, factories in code, TorchScript,
``torch.export`` archives (``.pt2``) and ONNX graphs (run by onnxruntime).

Weights are state dicts read with ``torch.load(weights_only=True)``: never
pickle; TorchScript, ``.pt2`` and ONNX files carry their own. The weights digest
(sha256 of the file) is part of every cache key, so new weights never read old
activations.

What each format serves (``supported_methods``): ``torch`` and ``exported``
every method their structure allows; ``torchscript`` the methods that need no
layer access; ``onnx`` the forward-only methods: occlusion, the embedding, and
those that read a layer's activation in a forward pass (Score-CAM, Ablation-CAM,
Eigen-CAM, feature maps, channel profile).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..config import ModelSpec
from ..errors import InvalidArgument
from ..methods import METHODS
from ..methods.chunking import memory_budget
from .explainable import ExplainableModel
from .exported import load_exported
from .forward_only import ForwardOnlyClassifier
from .imaging import Preprocess
from .onnx_model import OnnxClassifier

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
    labels = _read_labels(spec)
    digest = _weights_digest(spec)
    fmt = model_format(spec)
    replicas = {}
    for device in devices:
        module = _build_module(spec, device)
        replicas[str(device)] = ExplainableModel(
            module,
            input_size=spec.input_size,
            name=spec.name,
            labels=labels,
            default_layer=spec.default_layer,
            device=device,
            memory_budget_bytes=memory_budget(memory_budget_bytes, device),
            layer_access=fmt in ("torch", "exported"),
            channels_last=channels_last,
        )
    first = next(iter(replicas.values()))
    preprocess = Preprocess(
        input_size=spec.input_size,
        mean=spec.mean,
        std=spec.std,
        resize_mode=spec.resize_mode,
        resize_size=spec.resize_size,
    )
    return LoadedModel(
        name=spec.name,
        format=fmt,
        replicas=replicas,
        preprocess=preprocess,
        labels=labels,
        weights_digest=digest,
        methods=supported_methods(first),
    )


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


def _build_module(spec: ModelSpec, device: torch.device) -> nn.Module | ForwardOnlyClassifier:
    if spec.onnx:
        return OnnxClassifier(
            spec.path(spec.onnx), name=spec.name, input_size=spec.input_size, device=device
        )
    if spec.exported:
        return load_exported(spec.path(spec.exported), name=spec.name, input_size=spec.input_size)
    if spec.torchscript:
        module: nn.Module = torch.jit.load(  # type: ignore[no-untyped-call]
            str(spec.path(spec.torchscript)), map_location="cpu"
        )
        return module
    assert spec.arch is not None
    torch.manual_seed(0)  # no weights: the same random model in every replica and process
    module = _factory(spec.arch)(**({"num_classes": spec.num_classes} if spec.num_classes else {}))
    if spec.weights:
        path = spec.path(spec.weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise InvalidArgument(
                f"model {spec.name!r}: cannot load weights {path}: {exc}"
            ) from None
        module.load_state_dict(state)
    return module


def _factory(arch: str) -> Callable[..., nn.Module]:
    if ":" in arch:
        module_name, _, attribute = arch.partition(":")
        try:
            factory: Callable[..., nn.Module] = getattr(
                importlib.import_module(module_name), attribute
            )
        except (ImportError, AttributeError) as exc:
            raise InvalidArgument(f"cannot import model factory {arch!r}: {exc}") from None
        return factory
    available = torchvision.models.list_models()
    if arch not in available:
        raise InvalidArgument(f"unknown torchvision architecture {arch!r}")
    return lambda **kwargs: torchvision.models.get_model(arch, weights=None, **kwargs)


def _read_labels(spec: ModelSpec) -> list[str] | None:
    if not spec.labels:
        return None
    lines = spec.path(spec.labels).read_text().splitlines()
    return [line.strip() for line in lines if line.strip()]


def _weights_digest(spec: ModelSpec) -> str:
    source = spec.weights or spec.torchscript or spec.exported or spec.onnx
    if source is None:
        return hashlib.sha256(f"init:{spec.arch}:{spec.num_classes}".encode()).hexdigest()
    digest = hashlib.sha256()
    with Path(spec.path(source)).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
