"""A layer's output as a map grid ``(N, C, h, w)``: how the CAM family reads any layer.

A convolution's output already is one. A transformer block's output is not:
ViT and DeiT blocks return tokens ``(N, T, C)``, the prefix tokens (class token,
DeiT's distillation token, register tokens) followed by the patches in raster
order; Swin blocks return channels-last maps ``(N, h, w, C)``. This is
pytorch-grad-cam's ``reshape_transform`` recipe (its ``vit_example.py`` and
``swinT_example.py``): drop the prefix tokens, lay the patches out on the
``(h, w)`` grid, bring the channels first; the gradients take the same transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import InvalidArgument

GridKind = Literal["channels_first", "tokens", "channels_last"]


@dataclass(frozen=True)
class LayerGrid:
    """How one layer's output ``(N, ...)`` becomes maps ``(N, channels, h, w)``.

    ``height`` x ``width`` is the grid at the probe's ``input_size``; a token
    layer's grid at another input size is that size divided by the same stride.
    ``prefix`` counts the tokens ahead of the patches (0 for the other kinds).
    """

    kind: GridKind
    channels: int
    height: int
    width: int
    input_size: tuple[int, int]
    prefix: int = 0

    @property
    def is_token_layer(self) -> bool:
        """A transformer's layer: tokens, or a channels-last map."""
        return self.kind != "channels_first"

    @property
    def channel_dim(self) -> int:
        """The dimension of the layer's own output that holds the channels."""
        return 1 if self.kind == "channels_first" else -1

    def maps(self, output: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        """``output`` (or its gradient) as ``(N, C, h, w)`` for inputs of ``input_size``.

        Tokens: ``output[:, prefix:].reshape(N, h, w, C).permute(0, 3, 1, 2)``;
        channels last: ``output.permute(0, 3, 1, 2)``; channels first: ``output``.
        """
        if self.kind == "channels_first":
            return output
        if self.kind == "channels_last":
            return output.permute(0, 3, 1, 2)
        patches = output[:, self.prefix :]
        height, width = self._token_grid(int(patches.shape[1]), input_size)
        return patches.reshape(patches.shape[0], height, width, patches.shape[2]).permute(
            0, 3, 1, 2
        )

    def stored(self, output: torch.Tensor) -> torch.Tensor:
        """``output`` as the activation cache keeps it, one ``(K, h, w)`` entry per sample:
        tokens ``(N, T, C)`` gain a trailing unit dimension, other kinds are kept as is."""
        return output.unsqueeze(-1) if self.kind == "tokens" else output

    def restored(self, stored: torch.Tensor) -> torch.Tensor:
        """The layer's output from its ``stored`` form (inverse of ``stored``)."""
        return stored.squeeze(-1) if self.kind == "tokens" else stored

    def zero_channels(
        self, outputs: torch.Tensor, rows: torch.Tensor, channels: torch.Tensor
    ) -> None:
        """Set channel ``channels[i]`` of ``outputs[rows[i]]`` to 0 in place, at every
        position; in a token layer every token, prefix tokens included (as
        pytorch-grad-cam's ``AblationLayerVit`` does)."""
        if self.kind == "channels_first":
            outputs[rows, channels] = 0
        else:
            outputs[rows, ..., channels] = 0

    def _token_grid(self, patches: int, input_size: tuple[int, int]) -> tuple[int, int]:
        if input_size == self.input_size:
            height, width = self.height, self.width
        else:
            height = input_size[0] * self.height // self.input_size[0]
            width = input_size[1] * self.width // self.input_size[1]
        if height * width != patches:
            raise InvalidArgument(
                f"the layer gives {patches} patch tokens, which do not fill the "
                f"{height}x{width} patch grid of a {input_size[0]}x{input_size[1]} input"
            )
        return height, width
