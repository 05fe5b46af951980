"""The demo classifier: a small CNN ending in global average pooling + one linear layer."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def _block(cin: int, cout: int, pool: bool, dilation: int = 1) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers, then an optional 2x2 max pool."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class DemoNet(nn.Module):
    """Three conv blocks (64 -> 32 -> 16 px), global average pooling, one linear layer.

    The last block keeps a 16x16 map but dilates its convolutions, so each cell sees a
    whole object: class activation maps peak on the object rather than on its edges.
    """

    def __init__(self, num_classes: int = 6) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                block1=_block(3, 16, pool=True),
                block2=_block(16, 32, pool=True),
                block3=_block(32, 64, pool=False, dilation=2),
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(torch.flatten(self.pool(self.features(x)), 1))
        return out


def build_demo_model(num_classes: int = 6) -> nn.Module:
    """The demo architecture with fresh weights (load ``weights.pt`` for the trained ones)."""
    return DemoNet(num_classes)
