"""Tiny vision transformers with seeded random weights, for the engine and server tests.

Each factory takes ``num_classes`` (as the server's ``module:factory`` configs
call it) and builds a 32x32 model: torchvision's ViT, timm's ViT and distilled
DeiT (two prefix tokens), and both libraries' Swin. Nothing is downloaded
(``pretrained=False``, ``weights=None``). ``DEFAULT_LAYERS`` holds the layer
pytorch-grad-cam advises for each, the last block's first norm.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from camserve_server.models import ExplainableModel

SIZE = 32
NUM_CLASSES = 10


def torchvision_vit(num_classes: int = NUM_CLASSES) -> nn.Module:
    """torchvision ViT: 8x8 patches (a 4x4 grid), one class token, two blocks. torchvision
    initialises the head to zeros (every gradient would be 0): it is drawn at random."""
    model: nn.Module = VisionTransformer(
        image_size=SIZE,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=num_classes,
    )
    head = model.get_submodule("heads.head")
    assert isinstance(head, nn.Linear)
    nn.init.normal_(head.weight, std=0.2)
    return model


def _small_timm_vit(name: str, num_classes: int) -> nn.Module:
    """The timm ViT-family model ``name`` at 32x32 with 8x8 patches and two blocks."""
    model: nn.Module = timm.create_model(
        name, pretrained=False, img_size=SIZE, patch_size=8, depth=2, num_classes=num_classes
    )
    return model


def timm_vit(num_classes: int = NUM_CLASSES) -> nn.Module:
    """timm ``vit_tiny_patch16_224`` at 32x32 with 8x8 patches and two blocks."""
    return _small_timm_vit("vit_tiny_patch16_224", num_classes)


def timm_deit_distilled(num_classes: int = NUM_CLASSES) -> nn.Module:
    """timm ``deit_tiny_distilled_patch16_224`` likewise: class and distillation tokens."""
    return _small_timm_vit("deit_tiny_distilled_patch16_224", num_classes)


def timm_swin(num_classes: int = NUM_CLASSES) -> nn.Module:
    """timm ``swin_tiny_patch4_window7_224`` shrunk: two stages (8x8, then 4x4), windows
    of 4, shifted in the first stage; blocks return channels-last ``(N, h, w, C)``."""
    model: nn.Module = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=SIZE,
        window_size=4,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(1, 2),
        num_classes=num_classes,
    )
    return model


def torchvision_swin(num_classes: int = NUM_CLASSES) -> nn.Module:
    """torchvision's ``SwinTransformer`` with the same small shape as ``timm_swin``."""
    model: nn.Module = SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2, 2],
        num_heads=[1, 2],
        window_size=[4, 4],
        num_classes=num_classes,
    )
    return model


FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "torchvision_vit": torchvision_vit,
    "timm_vit": timm_vit,
    "timm_deit_distilled": timm_deit_distilled,
    "timm_swin": timm_swin,
    "torchvision_swin": torchvision_swin,
}

DEFAULT_LAYERS = {
    "torchvision_vit": "encoder.layers.encoder_layer_1.ln_1",
    "timm_vit": "blocks.1.norm1",
    "timm_deit_distilled": "blocks.1.norm1",
    "timm_swin": "layers.1.blocks.1.norm1",
    "torchvision_swin": "features.3.1.norm1",
}


@dataclass(frozen=True)
class TransformerCase:
    """A tiny transformer wrapped for the engine, an independent frozen twin for the
    reference library, and a seeded input pair."""

    name: str
    model: ExplainableModel
    reference: nn.Module
    x: torch.Tensor

    def top_classes(self, k: int) -> list[list[int]]:
        """The ``k`` most probable classes of each input, most probable first."""
        with torch.no_grad():
            logits = self.reference(self.x)
        return [[int(c) for c in row] for row in logits.topk(k, dim=1).indices.tolist()]


def build_case(name: str, seed: int = 0) -> TransformerCase:
    """``FACTORIES[name]`` with weights seeded by ``seed``, and two seeded inputs."""
    torch.manual_seed(seed)
    module = FACTORIES[name]().eval()
    reference = copy.deepcopy(module).eval().requires_grad_(False)
    model = ExplainableModel(module, input_size=(SIZE, SIZE), name=name)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed + 1))
    return TransformerCase(name, model, reference, x)
