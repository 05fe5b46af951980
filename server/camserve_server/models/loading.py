"""Build the models a config names: torchvision builders, factories in code, TorchScript,
``torch.export`` archives (``.pt2``) and ONNX graphs (run by onnxruntime).

Weights are state dicts read with ``torch.load(weights_only=True)``: never
pickle; TorchScript, ``.pt2`` and ONNX files carry their own. The weights digest
(sha256 of the file) is part of every cache key, so new weights never read old
activations.

A model that cannot be built is ``InvalidArgument`` naming the model and the file, in
one line the operator can act on: ``camserve-server`` prints it and exits 2. Never
torch's own text for weights it refuses, which recommends ``weights_only=False``,
that is, running whatever code the file holds.

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
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..config import ModelSpec
from ..errors import InvalidArgument, choices
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
        path = spec.path(spec.torchscript)
        try:
            module: nn.Module = torch.jit.load(  # type: ignore[no-untyped-call]
                str(path), map_location="cpu"
            )
        except (OSError, RuntimeError, ValueError):
            raise InvalidArgument(
                f"model {spec.name!r}: {path} is not a TorchScript archive (torch.jit.save)"
            ) from None
        return module
    assert spec.arch is not None
    factory = _factory(spec.name, spec.arch)
    torch.manual_seed(0)  # no weights: the same random model in every replica and process
    try:
        module = factory(**({"num_classes": spec.num_classes} if spec.num_classes else {}))
    except (TypeError, ValueError) as exc:  # e.g. a builder without num_classes
        raise InvalidArgument(
            f"model {spec.name!r}: cannot build architecture {spec.arch!r}: {_first_line(exc)}"
        ) from None
    if spec.weights:
        _load_weights(spec, module, spec.path(spec.weights))
    return module


def _load_weights(spec: ModelSpec, module: nn.Module, path: Path) -> None:
    """Load the state dict at ``path`` into ``module``, or say in one line why not."""
    try:
        with warnings.catch_warnings():
            # A pickle of a newer protocol (pickle.dump, not torch.save) draws a warning
            # ahead of the error below: noise on the one line start-up failures get.
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise InvalidArgument(
            f"model {spec.name!r}: cannot read weights {path}: {exc.strerror or exc}"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:
        # Fed random bytes, a truncated archive or a pickled object, torch's unpickler
        # raises almost any kind (UnpicklingError, IndexError, KeyError, EOFError...), and
        # its text recommends weights_only=False: only the kind is logged.
        log.debug("torch.load(%s, weights_only=True): %s", path, type(exc).__name__)
        raise InvalidArgument(
            f"model {spec.name!r}: weights {path} are not a state dict "
            "(save them with torch.save(model.state_dict(), path))"
        ) from None
    if not isinstance(state, Mapping):
        raise InvalidArgument(
            f"model {spec.name!r}: weights {path} hold a {type(state).__name__}, not a state "
            "dict (save them with torch.save(model.state_dict(), path))"
        )
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that differ are refused even when not strict
        raise InvalidArgument(
            f"model {spec.name!r}: weights {path} do not fit architecture {spec.arch!r}: "
            f"{_load_errors(exc)}"
        ) from None
    problems = [
        f"{len(keys)} {what} ({choices(keys, limit=3)})"
        for what, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
        if keys
    ]
    if problems:
        raise InvalidArgument(
            f"model {spec.name!r}: weights {path} do not fit architecture {spec.arch!r}: "
            f"keys {'; '.join(problems)}"
        )


def _load_errors(exc: RuntimeError) -> str:
    """``load_state_dict``'s several lines in one: the keys whose shapes differ."""
    text = str(exc)
    reshaped = re.findall(r"size mismatch for ([^:\s]+):", text)
    if reshaped:
        return f"{len(reshaped)} with another shape ({choices(reshaped, limit=3)})"
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    return lines[0] if lines else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _factory(name: str, arch: str) -> Callable[..., nn.Module]:
    """The builder ``arch`` names: ``module:attribute`` in code, else a torchvision model."""
    if ":" in arch:
        module_name, _, attribute = arch.partition(":")
        try:
            factory: Callable[..., nn.Module] = getattr(
                importlib.import_module(module_name), attribute
            )
        except (ImportError, AttributeError) as exc:
            raise InvalidArgument(
                f"model {name!r}: cannot import model factory {arch!r}: {_first_line(exc)}"
            ) from None
        return factory
    available = torchvision.models.list_models()
    if arch not in available:
        raise InvalidArgument(
            f"model {name!r}: unknown architecture {arch!r} "
            "(a torchvision model such as resnet18, or 'package.module:factory')"
        )
    return lambda **kwargs: torchvision.models.get_model(arch, weights=None, **kwargs)


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


def _weights_digest(spec: ModelSpec) -> str:
    """The sha256 of the model's file; reading it first also makes a missing or unreadable
    file one clear error before anything is built."""
    source = spec.weights or spec.torchscript or spec.exported or spec.onnx
    if source is None:
        return hashlib.sha256(f"init:{spec.arch}:{spec.num_classes}".encode()).hexdigest()
    path = Path(spec.path(source))
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InvalidArgument(f"model {spec.name!r}: cannot read {path}: {reason}") from None
    return digest.hexdigest()
