"""Fixtures shared across the suite: torchvision classifiers with seeded random weights.

Nothing is downloaded: every model is built with ``weights=None`` under a fixed
seed, then its BatchNorm statistics are estimated from a few batches of random
data, so activations have realistic scales instead of the identity statistics
of a fresh model. Inputs are small (64x64, the least that leaves a 2x2 map at
stride 32) so that the heaviest methods still run in seconds on two cores.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from camserve_server.models import ExplainableModel

NUM_CLASSES = 10
INPUT_SIZE = (64, 64)


@dataclass(frozen=True)
class ZooModel:
    """A torchvision classifier wrapped for the engine, with a twin for reference libraries.

    Both layers have outputs that no later operation modifies in place, where
    pytorch-grad-cam's stored activation is trustworthy. ``layer`` is the last
    block before global pooling; ``relu_layer`` is an early layer of ReLU outputs
    (or their max-pool), whose minimum is 0, where Ablation-CAM's ablation value
    agrees with METHODS.md, and with few channels, so that methods running one
    forward per channel stay cheap.
    ``reference`` is an independent deep copy of the same weights, also frozen,
    for libraries that attach hooks.
    """

    arch: str
    model: ExplainableModel
    reference: nn.Module
    layer: str
    relu_layer: str
    x: torch.Tensor

    def top_classes(self, x: torch.Tensor, k: int) -> list[list[int]]:
        """The ``k`` most probable classes of every sample of ``x``, most probable first."""
        with torch.no_grad():
            logits = self.reference(x)
        return [[int(c) for c in row] for row in logits.topk(k, dim=1).indices.tolist()]


# arch -> (the block output before global pooling, an early layer of 64-88 ReLU outputs)
ZOO_LAYERS: dict[str, tuple[str, str]] = {
    "resnet18": ("layer4", "layer1"),
    "vgg11_bn": ("features", "features.3"),
    "densenet121": ("features.denseblock4", "features.pool0"),
    "mobilenet_v3_small": ("features", "features.3.block.1"),
}


def _calibrate_batchnorm(module: nn.Module, seed: int) -> None:
    """Replace BatchNorm running statistics by their average over three random batches."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    generator = torch.Generator().manual_seed(seed)
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(torch.randn(8, 3, *INPUT_SIZE, generator=generator))
    module.eval()
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


def build_zoo_model(arch: str, seed: int = 0) -> ZooModel:
    """Build ``arch`` with seeded random weights, calibrated BatchNorm and a seeded input pair."""
    torch.manual_seed(seed)
    module = torchvision.models.get_model(arch, weights=None, num_classes=NUM_CLASSES)
    layer, relu_layer = ZOO_LAYERS[arch]
    return zoo_model_of(arch, module, layer, relu_layer, seed)


def zoo_model_of(name: str, module: nn.Module, layer: str, relu_layer: str, seed: int) -> ZooModel:
    """``module`` (already built under ``seed``) with calibrated BatchNorm, its frozen
    reference twin and a seeded input pair."""
    _calibrate_batchnorm(module, seed + 1)
    reference = copy.deepcopy(module).eval().requires_grad_(False)
    model = ExplainableModel(module, input_size=INPUT_SIZE, name=name)
    generator = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(2, 3, *INPUT_SIZE, generator=generator)
    return ZooModel(name, model, reference, layer, relu_layer, x)
