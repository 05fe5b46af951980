"""Small models and checks shared by the engine's behaviour tests (``test_engine_*.py``).

Everything here is deterministic: weights come from fixed seeds, so a failure
reproduces exactly. The models are tiny on purpose, so that every method in the
registry, heavy ones included, runs in well under a second on two CPU cores.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torchvision
from torch import nn

from camserve_server.models import ExplainableModel

NUM_CLASSES = 10
TINY_SIZE = 32

# Small options for the heavy methods: few passes, and a ``batch_size`` that does
# not divide the passes of one sample, so chunk boundaries fall inside a sample.
SMALL_OPTIONS: dict[str, dict[str, object]] = {
    "integrated_gradients": {"steps": 4, "batch_size": 3},
    "smoothgrad": {"samples": 3, "batch_size": 2},
    "occlusion": {"window": 12, "stride": 8, "batch_size": 4},
    "scorecam": {"batch_size": 5},
    "ablationcam": {"batch_size": 5},
}


class BasicBlock(nn.Module):
    """A ResNet basic block that, like torchvision's, calls one in-place ReLU twice."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.downsample(x)
        result: torch.Tensor = self.relu(out)
        return result


class TinyResNet(nn.Module):
    """stem -> layer1 -> layer2 (16 channels, the CAM layer) -> global average pool -> fc."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(8, 12, stride=2)
        self.layer2 = BasicBlock(12, 16, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        logits: torch.Tensor = self.fc(torch.flatten(self.avgpool(x), 1))
        return logits


def _randomise_batch_norms(module: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial statistics, so eval mode is not the identity."""
    for child in module.modules():
        if isinstance(child, nn.BatchNorm2d):
            size = child.num_features
            assert child.running_mean is not None and child.running_var is not None
            child.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
            child.running_var.copy_(0.5 + torch.rand(size, generator=generator))
            child.weight.data.copy_(0.5 + torch.rand(size, generator=generator))
            child.bias.data.copy_(0.1 * torch.randn(size, generator=generator))


def tiny_resnet() -> ExplainableModel:
    """A fresh, seeded ``TinyResNet`` at 32x32; its default layer is ``layer2``."""
    torch.manual_seed(0)
    module = TinyResNet()
    _randomise_batch_norms(module, torch.Generator().manual_seed(1))
    return ExplainableModel(module, input_size=(TINY_SIZE, TINY_SIZE), name="tiny_resnet")


def tiny_net(model: ExplainableModel) -> TinyResNet:
    """The ``TinyResNet`` inside an ``ExplainableModel`` built by ``tiny_resnet``."""
    assert isinstance(model.module, TinyResNet)
    return model.module


def images(n: int, size: int = TINY_SIZE, seed: int = 0) -> torch.Tensor:
    """A seeded batch ``(n, 3, size, size)`` of normalised-looking inputs."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


class LinearCamNet(nn.Module):
    """``x -> conv1x1 -> A -> global average pool -> fc``: every map has a closed form.

    With ``A = conv(x)`` of size ``h x w`` and ``W = fc.weight``:
    ``dy_c/dA_k = W[c, k] / (h w)`` everywhere, so Grad-CAM's channel weights are
    ``W[c, k] / (h w)``, and ``dy_c/dx`` is the constant ``(W @ V)[c] / (h w)`` with
    ``V = conv.weight``.
    """

    def __init__(
        self,
        conv_weight: torch.Tensor,
        conv_bias: torch.Tensor,
        fc_weight: torch.Tensor,
        fc_bias: torch.Tensor,
    ) -> None:
        super().__init__()
        channels = conv_weight.shape[0]
        self.conv = nn.Conv2d(3, channels, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, fc_weight.shape[0])
        with torch.no_grad():
            self.conv.weight.copy_(conv_weight.view(channels, 3, 1, 1))
            self.fc.weight.copy_(fc_weight)
            for bias, value in ((self.conv.bias, conv_bias), (self.fc.bias, fc_bias)):
                assert bias is not None
                bias.copy_(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.fc(torch.flatten(self.pool(self.conv(x)), 1))
        return logits


@functools.cache
def torchvision_model(arch: str, size: int = 64) -> ExplainableModel:
    """A seeded torchvision classifier (``weights=None``, 10 classes), built once per run.

    Shared between tests: a test that adds a hook must remove it.
    """
    torch.manual_seed(0)
    module = torchvision.models.get_model(arch, weights=None, num_classes=NUM_CLASSES)
    return ExplainableModel(module, input_size=(size, size), name=arch)


def leftover_hooks(module: nn.Module) -> list[str]:
    """Every hook or patched ``forward`` still attached to ``module`` or its children.

    Empty after any call to the engine, successful or not.
    """
    found = []
    for name, child in module.named_modules():
        for kind in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            if getattr(child, kind):
                found.append(f"{name or '<root>'}.{kind}")
        if "forward" in vars(child):
            found.append(f"{name or '<root>'} has a patched forward")
    module_globals = nn.modules.module
    for kind in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks"):
        if getattr(module_globals, kind):
            found.append(f"global {kind}")
    return found


@contextmanager
def rows_through(module: nn.Module) -> Iterator[list[int]]:
    """Record the batch size of every call of ``module``; the hook is removed on exit."""
    sizes: list[int] = []

    def record(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        sizes.append(int(args[0].shape[0]))

    handle = module.register_forward_pre_hook(record)
    try:
        yield sizes
    finally:
        handle.remove()


def max_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest absolute difference of two tensors of the same shape."""
    assert actual.shape == expected.shape, f"shapes differ: {actual.shape} vs {expected.shape}"
    return float((actual.float() - expected.float()).abs().max())


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, *, atol: float = 0.0, rel: float = 0.0
) -> None:
    """``max |actual - expected| <= atol + rel * max |expected|`` (relative to the scale)."""
    scale = float(expected.float().abs().max()) if expected.numel() else 0.0
    difference = max_difference(actual, expected) if expected.numel() else 0.0
    bound = atol + rel * scale
    assert difference <= bound, f"max difference {difference:.3g} > {bound:.3g} (scale {scale:.3g})"
