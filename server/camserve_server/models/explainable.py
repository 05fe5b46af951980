"""``ExplainableModel``: a classifier prepared for explanation.

Wraps an ``nn.Module`` once: eval mode, parameters frozen (no parameter
gradient is ever computed), its structure inspected, and one head per layer
split off lazily so a cached activation can skip the backbone. A forward-only
classifier (an ONNX graph) is wrapped too: it has no module and no gradients,
and serves the methods that only call ``forward``, and, where it can output its
layers (``layer_outputs``), those that read a layer's activation in a forward
pass; its heads come from the classifier itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch
from torch import fx, nn

from ..errors import InvalidArgument, choices
from .forward_only import ForwardOnlyClassifier
from .inspection import ModelStructure, inspect_model
from .layer_grid import LayerGrid
from .split import LinearHead, build_head, head_matches, linear_head_matches, split_linear

Head = Callable[[torch.Tensor], torch.Tensor]


class ExplainableModel:
    """A frozen classifier on one device, with its layers and default layer known.

    Calls that run the model must not overlap on one instance (hooks and patched
    modules are per instance): the server gives each device worker its own copy.
    """

    def __init__(
        self,
        module: nn.Module | ForwardOnlyClassifier,
        *,
        input_size: tuple[int, int] = (224, 224),
        name: str = "model",
        labels: Sequence[str] | None = None,
        default_layer: str | None = None,
        device: torch.device | str | None = None,
        memory_budget_bytes: int = 1 << 30,
        layer_access: bool = True,
        channels_last: bool = False,
    ) -> None:
        self.name = name
        self.memory_budget_bytes = int(memory_budget_bytes)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.graph: ForwardOnlyClassifier | None = None
        self._module: nn.Module | None = None
        if isinstance(module, nn.Module):
            self.device = torch.device(device) if device is not None else _module_device(module)
            self._module = module.to(self.device).eval()
            self.channels_last = channels_last and layer_access
            if self.channels_last:  # NHWC convolutions: much faster on CPUs and tensor cores
                self._module = self._module.to(memory_format=torch.channels_last)
            for parameter in self._module.parameters():
                parameter.requires_grad_(False)
            self.layer_access = layer_access
            self.layer_outputs = layer_access
            self.gradient_access = True
            self.structure: ModelStructure = inspect_model(
                self._module, self.input_size, self.device, hooks=layer_access
            )
        else:
            self.device = torch.device(device) if device is not None else torch.device("cpu")
            self.graph = module
            self.channels_last = False
            self.layer_access = False
            self.gradient_access = False
            self.structure = module.structure
            self.layer_outputs = bool(self.structure.default_layer or default_layer)
        self.num_classes = self.structure.num_classes
        self.labels = list(labels) if labels is not None else None
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise ValueError(
                f"{len(self.labels)} labels given for a model with {self.num_classes} classes"
            )
        self._modules = dict(self._module.named_modules()) if self._module is not None else {}
        self.default_layer = ""
        if self.layer_outputs:
            self.default_layer = self.resolve_layer(default_layer or self.structure.default_layer)
        self._heads: dict[str, fx.GraphModule | None] = {}
        self._linear_heads: dict[str, LinearHead | None] = {}
        self._heads_lock = threading.Lock()
        if self.layer_outputs:
            self.head(self.default_layer)  # split once at load, while nothing else runs

    @property
    def module(self) -> nn.Module:
        """The wrapped ``nn.Module``; a forward-only classifier has none."""
        if self._module is None:
            raise InvalidArgument(
                f"model {self.name!r} is a forward-only graph: it has no torch module, "
                "no layer hooks and no gradients"
            )
        return self._module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C)`` of a batch, from the module or the forward-only classifier;
        float32 also when the module ran under ``torch.autocast``."""
        if self.graph is not None:
            return self.graph(x)
        logits: torch.Tensor = self.module(x)
        return logits.float()

    def known_head(self, layer: str) -> bool | None:
        """Whether ``layer`` has a head, if already worked out (None: not yet); never builds."""
        if self.graph is not None:
            return self.graph.splits_at(layer)  # graph analysis: nothing is built
        if layer not in self._heads:
            return None
        return self._heads[layer] is not None

    @property
    def layers(self) -> list[str]:
        """Every module that returned a tensor in the probe forward, in execution order."""
        infos = sorted(self.structure.layers.values(), key=lambda i: i.order)
        return [info.name for info in infos]

    def resolve_layer(self, layer: str | None) -> str:
        """Return ``layer`` (or the default), checked to name a module with a tensor output.

        On a forward-only graph a name of one of its internal tensors is accepted too.
        """
        if not self.layer_outputs:
            raise InvalidArgument(f"model {self.name!r} is compiled: its layers cannot be reached")
        if not layer:
            return self.default_layer
        in_graph = self.graph is not None and self.graph.has_tensor(layer)
        if in_graph and layer not in self.structure.layers:
            return layer
        if layer not in self.structure.layers:
            spatial = self.structure.spatial_layers()
            outermost_first = sorted(
                spatial, key=lambda name: (name.count("."), spatial.index(name))
            )
            raise InvalidArgument(
                f"unknown layer {layer!r} for model {self.name!r} "
                f"(default {self.default_layer!r}); valid layers: {choices(outermost_first)}"
                + ("; or the name of a tensor of its graph" if self.graph is not None else "")
            )
        return layer

    def layer_grid(self, layer: str, output: torch.Tensor) -> LayerGrid:
        """How ``layer``'s ``output`` becomes maps ``(N, C, h, w)`` (``LayerGrid.maps``).

        A graph tensor the probe did not list is read as channels first when it is 4-D.
        A layer that gives no map (a pooled vector, logits) is ``InvalidArgument``.
        """
        grid = self.structure.grid(layer)
        if grid is None and layer not in self.structure.layers and output.dim() == 4:
            _, channels, height, width = (int(d) for d in output.shape)
            grid = LayerGrid("channels_first", channels, height, width, self.input_size)
        if grid is None:
            raise InvalidArgument(
                f"layer {layer!r} outputs shape {tuple(output.shape[1:])}; this method needs a "
                "spatial (C, h, w) feature map, patch tokens (T, C) or a channels-last "
                f"(h, w, C) map; layers that give maps: {choices(self.structure.spatial_layers())}"
            )
        return grid

    def submodule(self, layer: str) -> nn.Module:
        """The module at a dotted path (``layer4``, ``features.12``)."""
        name = self.resolve_layer(layer)
        if self.graph is not None:
            raise InvalidArgument(
                f"model {self.name!r} is a forward-only graph: it has no torch module to hook "
                f"at layer {name!r}, and no gradients"
            )
        module: nn.Module = self._modules[name]
        return module

    def head(self, layer: str) -> Head | None:
        """The model after ``layer``, verified on a probe input; None if it cannot be split."""
        with self._heads_lock:
            if self.graph is not None:
                return self.graph.head(layer)  # built and kept by the graph itself
            if layer not in self._heads:
                self._heads[layer], self._linear_heads[layer] = self._build_verified_head(layer)
            return self._heads[layer]

    def linear_head(self, layer: str) -> LinearHead | None:
        """The head after ``layer`` split before its final ``nn.Linear`` (verified), or None."""
        self.head(layer)
        return self._linear_heads.get(layer)

    def _build_verified_head(self, layer: str) -> tuple[fx.GraphModule | None, LinearHead | None]:
        head = build_head(self.module, layer)
        if head is None:
            return None, None
        captured: list[torch.Tensor] = []
        handle = self.submodule(layer).register_forward_hook(
            lambda _m, _i, out: captured.append(out.clone())
        )
        try:
            generator = torch.Generator().manual_seed(0)
            probe = torch.randn(2, 3, *self.input_size, generator=generator).to(self.device)
            with torch.inference_mode():
                logits = self.module(probe)
        finally:
            handle.remove()
        if len(captured) != 1 or not head_matches(head, self.module, captured[0], logits):
            return None, None
        linear = split_linear(head)
        if linear is not None and not linear_head_matches(linear, head, captured[0]):
            linear = None
        return head, linear


def _module_device(module: nn.Module) -> torch.device:
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")
