"""Score-CAM (Wang et al. 2020): channels weighted by the score of the input they mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..options import Option
from .base import BatchInput, Rows
from .cam_base import CamMethod
from .chunking import rows_per_pass, spans
from .layer_pass import LayerRead


class ScoreCam(CamMethod):
    """``M_k`` = minmax(bilinear upsample of ``A_k``, align_corners=True); ``s_k = y_c(x * M_k)``;
    ``w = softmax_k(s)``. Masked inputs run in batches sized to the memory budget.
    """

    id = "scorecam"
    heavy = True
    pixels_on_cache_hit = True
    needs_gradients = False
    description = "Each channel weighted by the softmaxed class score of the input it masks."
    reference = "Wang et al. 2020; pytorch-grad-cam ScoreCAM"
    variant = "scorecam (softmax over channel scores, pytorch-grad-cam)"
    options = (
        Option(
            "batch_size",
            0,
            "masked inputs per forward pass (0: by memory budget)",
            minimum=0,
            maximum=4096,
        ),
    )

    def cam_forward_only(self, batch: BatchInput, layer: LayerRead, rows: Rows) -> torch.Tensor:
        activation, logits = layer.maps, layer.logits
        n, k = activation.shape[:2]
        chunk = rows_per_pass(batch.model, int(batch.options["batch_size"]))
        scores = logits.new_empty((n * k, logits.shape[1]))
        for start, stop in spans(n * k, chunk):
            pairs = torch.arange(start, stop, device=activation.device)
            sample, channel = pairs // k, pairs % k
            masks = F.interpolate(
                activation[sample, channel][:, None].float(),
                size=batch.size,
                mode="bilinear",
                align_corners=True,
            )
            low = masks.amin(dim=(2, 3), keepdim=True)
            high = masks.amax(dim=(2, 3), keepdim=True)
            masks = (masks - low) / (high - low + 1e-8)
            scores[start:stop] = batch.model.forward(batch.x[sample] * masks)
        per_row = scores.view(n, k, -1)[rows.sample, :, rows.target]
        weights = torch.softmax(per_row, dim=-1)
        return torch.einsum("mk,mkhw->mhw", weights, activation[rows.sample])
