"""Ablation-CAM (Desai & Ramaswamy 2020): a channel's weight is the score lost without it."""

from __future__ import annotations

import torch

from ..errors import InvalidArgument, choices
from ..options import Option
from .base import BatchInput, BatchResult, Rows
from .cam_base import CamMethod
from .chunking import rows_per_pass, spans
from .layer_pass import LayerRead, layer_hook


class AblationCam(CamMethod):
    """``w_k = (y_c - y_c[A_k := 0]) / y_c``. Only the head after the layer runs on the
    ablated activations (a full forward that substitutes them where the model cannot be
    split), in batches sized to the memory budget. A forward-only graph cannot
    substitute an activation inside a full pass: there only layers it splits at serve.

    ``y_c`` comes from the same head passes as the ablated scores (one unablated copy
    per sample), not from the logits, so both sides of the difference are computed
    alike even when the activation came from the cache of a reduced-precision
    forward. The score drops are often below bfloat16's resolution, so the method
    runs in float32 under any server ``precision``. A token layer's channel is zeroed
    in every token, prefix tokens included (``LayerGrid.zero_channels``).
    """

    id = "ablationcam"
    heavy = True
    runs_head_on_cache_hit = True
    needs_gradients = False
    mixed_precision = False
    description = "Each channel weighted by the relative drop of the class score when it is zeroed."
    reference = "Desai & Ramaswamy 2020; pytorch-grad-cam AblationCAM at post-ReLU layers"
    variant = "ablationcam (channel set to 0)"
    options = (
        Option(
            "batch_size",
            0,
            "ablated copies per forward pass (0: by memory budget)",
            minimum=0,
            maximum=4096,
        ),
    )

    def run(self, batch: BatchInput) -> BatchResult:
        model = batch.model
        assert batch.layer is not None
        if model.graph is not None and model.head(batch.layer) is None:
            splits = [name for name in model.structure.spatial_layers() if model.known_head(name)]
            raise InvalidArgument(
                f"ablationcam cannot run at layer {batch.layer!r} of model {model.name!r}: its "
                "graph does not split there (another path reaches the logits around it), and "
                "an ONNX graph cannot take a replaced activation in a full pass; layers it "
                f"splits at: {choices(splits)}"
            )
        return super().run(batch)

    def cam_forward_only(self, batch: BatchInput, layer: LayerRead, rows: Rows) -> torch.Tensor:
        assert batch.layer is not None
        activation, logits = layer.maps, layer.logits
        n, k = activation.shape[:2]
        head = batch.model.head(batch.layer)
        chunk = rows_per_pass(batch.model, int(batch.options["batch_size"]))
        copies = k + 1  # per sample: channel j zeroed for j < k, then the unablated copy
        scores = logits.new_empty((n * copies, logits.shape[1]))
        for start, stop in spans(n * copies, chunk):
            pairs = torch.arange(start, stop, device=activation.device)
            sample, channel = pairs // copies, pairs % copies
            ablated = layer.output[sample].clone()
            zeroed = torch.nonzero(channel < k).flatten()
            layer.grid.zero_channels(ablated, zeroed, channel[zeroed])
            if head is not None:
                scores[start:stop] = head(ablated)
            else:
                with layer_hook(batch.model.submodule(batch.layer), substitute=ablated):
                    scores[start:stop] = batch.model.module(batch.x[sample])
        per_copy = scores.view(n, copies, -1)
        original = per_copy[rows.sample, k, rows.target][:, None]
        dropped = per_copy[rows.sample, :k, rows.target]
        weights = (original - dropped) / original
        return torch.einsum("mk,mkhw->mhw", weights, activation[rows.sample])
