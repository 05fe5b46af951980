"""Where a configured model comes from: how to build it on a device, what its source
recommends, its weights digest and a line saying where its weights come from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .forward_only import ForwardOnlyClassifier
from .source_defaults import SourceDefaults

RANDOM_SOURCE = "random, seed 0"

Module = nn.Module | ForwardOnlyClassifier


@dataclass(frozen=True)
class ModelSource:
    """How to build the model once per device, and what its source says."""

    build: Callable[[torch.device], Module]
    defaults_of: Callable[[Module], SourceDefaults]  # given the first module built
    digest: str  # part of every cache key
    weights_source: str  # a file and digest prefix, a torchvision entry, or RANDOM_SOURCE

    @property
    def random(self) -> bool:
        """Whether the model has no weights but its seeded random initialisation."""
        return self.weights_source == RANDOM_SOURCE


def file_source(path: Path, digest: str) -> str:
    """``r18.pt (sha256 1a2b3c4d5e6f)``: the file's name alone (never the server's folders)
    and the start of its digest."""
    return f"{path.name}{'/' if path.is_dir() else ''} (sha256 {digest[:12]})"
