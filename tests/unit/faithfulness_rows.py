"""The demo model and maps shared by the faithfulness tests: Grad-CAM's maps of a few
held-out demo images, and seeded random maps of the same images."""

from __future__ import annotations

import functools

import torch

from camserve_server.demo import INPUT_SIZE, load_demo_model, preprocess
from camserve_server.demo.data import make_dataset
from camserve_server.methods import explain
from camserve_server.models import ExplainableModel

HELD_OUT_SEED = 4242  # neither the training nor the test seed of the demo model


@functools.cache
def demo_model() -> ExplainableModel:
    """The trained demo model, built once per run (forward only here: no hooks left)."""
    return ExplainableModel(load_demo_model(), input_size=INPUT_SIZE, name="demo")


def demo_images(count: int, seed: int = HELD_OUT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` held-out demo images ``(N, 3, 64, 64)`` and their true classes ``(N,)``."""
    samples = make_dataset(count, seed)
    x = torch.stack([preprocess(sample.image) for sample in samples])
    return x, torch.tensor([sample.label for sample in samples])


def gradcam_maps(x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's map ``(N, 64, 64)`` of every image for its class."""
    result = explain(demo_model(), "gradcam", x, targets=[int(c) for c in classes])
    maps = [sample.heatmaps for sample in result.samples]
    assert all(m is not None for m in maps)
    return torch.cat([m for m in maps if m is not None])


def random_maps(count: int, seed: int = 0) -> torch.Tensor:
    """Seeded uniform maps ``(N, 64, 64)`` in [0, 1): no relation to the images."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, *INPUT_SIZE, generator=generator)
