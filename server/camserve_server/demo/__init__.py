"""The shipped demo model: a small CNN trained on synthetic shapes (``train.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .model import build_demo_model

HERE = Path(__file__).resolve().parent
WEIGHTS_PATH = HERE / "weights.pt"
LABELS_PATH = HERE / "labels.txt"
SAMPLES_DIR = HERE / "samples"
INPUT_SIZE = (64, 64)
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def preprocess(image: np.ndarray) -> torch.Tensor:
    """A uint8 ``(64, 64, 3)`` image as the model's normalised float32 ``(3, 64, 64)`` input."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (x - mean) / std


def load_demo_model(device: str | torch.device = "cpu") -> nn.Module:
    """The trained demo model in eval mode (weights read with ``weights_only=True``)."""
    model = build_demo_model()
    state = torch.load(WEIGHTS_PATH, map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


__all__ = [
    "INPUT_SIZE",
    "LABELS_PATH",
    "MEAN",
    "SAMPLES_DIR",
    "STD",
    "WEIGHTS_PATH",
    "build_demo_model",
    "load_demo_model",
    "preprocess",
]
