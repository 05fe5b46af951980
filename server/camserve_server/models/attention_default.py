"""The default CAM layer of a vision transformer: the last attention block's first norm.

A ViT classifies from its class token, which the last block's patch tokens only
reach through that block's attention: the gradient of the score with respect to
the last block's output patch tokens is zero. pytorch-grad-cam therefore advises
the input of the last attention, its block's first norm: ``blocks[-1].norm1``
(timm ViT, DeiT), ``encoder.layers[-1].ln_1`` (torchvision ViT),
``layers[-1].blocks[-1].norm1`` (Swin). Found from the model, not its family: the
last module whose class is an attention (``nn.MultiheadAttention``, or a class
named ``*Attention``) inside a block holding no other attention, and in that
block the first token layer to finish before it.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from .layer_grid import LayerGrid


def is_attention(module: nn.Module) -> bool:
    """``nn.MultiheadAttention`` or a class named like one (timm ``Attention``, Swin's
    ``WindowAttention`` and ``ShiftedWindowAttention``)."""
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention")


def attention_block_norm(
    modules: Mapping[str, nn.Module],
    finished: Mapping[str, int],
    grids: Mapping[str, LayerGrid],
) -> str | None:
    """The first token layer of the last attention block, or None for a model without one.

    ``finished`` gives the order in which each module's (last) call returned in the
    probe forward; ``grids`` the layers that give map grids.
    """
    attentions = sorted(
        (finished[name], name)
        for name, module in modules.items()
        if name in finished and is_attention(module)
    )
    for order, attention in reversed(attentions):
        block = attention.rpartition(".")[0]
        if not block:
            continue
        inside = [name for name in modules if name.startswith(block + ".")]
        if sum(is_attention(modules[name]) for name in inside) != 1:
            continue  # not one attention block (e.g. a pooling attention at the top level)
        before = [
            (finished[name], name)
            for name in inside
            if name in grids
            and grids[name].is_token_layer
            and finished[name] < order
            and not name.startswith(attention + ".")
        ]
        if before:
            return min(before)[1]
    return None
