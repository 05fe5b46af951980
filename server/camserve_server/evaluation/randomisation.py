"""Cascading model-parameter randomisation (Adebayo et al. 2018, "Sanity Checks for
Saliency Maps"): re-initialise a model's parameterised layers from the output down and
watch whether a method's maps change.

The parameterised layers are the modules holding parameters of their own, in the order
a forward pass first enters them; the cascade walks them backwards, split into
``stages`` groups of about equal size, and stage ``k`` has re-initialised the first ``k``
groups. Re-initialisation draws from a ``torch.Generator`` seeded per layer (never the
global generator, which other threads share), with torch's default initialisation of a
convolution or linear layer for every weight and bias, ``U(-1/sqrt(fan_in),
1/sqrt(fan_in))``; normalisation layers are reset to ones, zeros and fresh running
statistics.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class Stage:
    """After this stage, ``layers`` (names, from the output down) are re-initialised."""

    layers: tuple[str, ...]

    @property
    def lowest(self) -> str:
        """The last layer re-initialised, the deepest from the output."""
        return self.layers[-1]


def parameterised_layers(module: nn.Module, probe: torch.Tensor) -> list[str]:
    """The modules with parameters of their own, in the order ``probe`` enters them
    (modules the forward pass never enters are left out)."""
    owners = {
        name: sub
        for name, sub in module.named_modules()
        if any(True for _ in sub.parameters(recurse=False))
    }
    order: list[str] = []
    handles = [
        sub.register_forward_pre_hook(lambda _m, _a, name=name: order.append(name))
        for name, sub in owners.items()
    ]
    try:
        with torch.no_grad():
            module(probe)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(order))


def cascade(layers: list[str], stages: int) -> list[Stage]:
    """The cumulative stages: the layers from the output down in ``stages`` groups of
    about equal size (fewer stages when there are fewer layers)."""
    top_down = list(reversed(layers))
    groups = [g for g in np.array_split(np.arange(len(top_down)), max(1, stages)) if g.size]
    return [Stage(tuple(top_down[: int(group[-1]) + 1])) for group in groups]


class RandomisedCopy:
    """A copy of a model whose layers are re-initialised stage by stage, in place (every
    tensor keeps its identity, so heads split from the copy see the new values); ``reset``
    restores the learned parameters."""

    def __init__(self, module: nn.Module, seed: int) -> None:
        self.original = module
        self.module = copy.deepcopy(module)
        self.seed = seed
        self._modules = dict(self.module.named_modules())
        self._randomised: set[str] = set()

    def reset(self) -> None:
        """Every parameter and buffer back to the original's values."""
        with torch.no_grad():
            for mine, theirs in zip(
                self.module.state_dict().values(),
                self.original.state_dict().values(),
                strict=True,
            ):
                mine.copy_(theirs)
        self._randomised.clear()

    def randomise(self, stage: Stage) -> None:
        """Re-initialise the stage's layers not yet re-initialised."""
        for name in stage.layers:
            if name not in self._randomised:
                reinitialise(self._modules[name], _layer_seed(self.seed, name))
                self._randomised.add(name)


def reinitialise(module: nn.Module, seed: int) -> None:
    """Fresh values for ``module``'s own parameters (see the module's docstring)."""
    with torch.no_grad():
        if isinstance(module, NORMS):
            module.reset_parameters()
            return
        generator = torch.Generator().manual_seed(seed)
        parameters = dict(module.named_parameters(recurse=False))
        weight = parameters.get("weight")  # a bias's bound comes from its weight
        for parameter in parameters.values():
            bound = 1.0 / math.sqrt(_fan_in(parameter if weight is None else weight))
            fresh = torch.empty(parameter.shape, dtype=torch.float32)
            fresh.uniform_(-bound, bound, generator=generator)
            parameter.copy_(fresh)


def _fan_in(tensor: torch.Tensor) -> int:
    """Inputs per output: the elements of one slice along the first dimension."""
    return max(1, tensor[0].numel() if tensor.dim() >= 2 else tensor.numel())


def _layer_seed(seed: int, name: str) -> int:
    """A seed of its own for each layer, from the evaluation's seed and the layer's name."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
