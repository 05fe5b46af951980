"""Occlusion (Zeiler & Fergus 2014): the score lost when a window of the input is covered."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ..options import Option
from .base import BatchInput, BatchResult, Family, Rows, package
from .chunking import rows_per_pass, spans
from .heatmap import signed_heatmaps
from .incremental import incremental_occluded_logits
from .input_gradients import AttributionMethod, target_rows

INCREMENTAL_VARIANT = "occlusion (incremental)"
APPROXIMATE_VARIANT = "occlusion (incremental, approximate)"


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """``0, s, 2s, ...``: ``ceil((size - window) / stride) + 1`` positions, the last clipped."""
    count = math.ceil(max(size - window, 0) / stride) + 1
    return [i * stride for i in range(count)]


class Occlusion(AttributionMethod):
    """Each pixel's attribution is the mean, over the windows covering it, of
    ``y_c(x) - y_c(x occluded)``; windows cover all channels and are filled with ``fill``.
    The occluded copies run as batches sized to the memory budget, forward only.
    With ``incremental`` (Nakandala et al., SIGMOD 2019), each copy reuses the original
    image's activations and recomputes only the positions its window reaches, layer by
    layer; a model that does not trace, or an operator the path does not know, runs
    every copy in full, and the result's variant says which path ran.
    """

    id = "occlusion"
    heavy = True
    family: ClassVar[Family] = "perturbation"
    needs_gradients = False
    mixed_precision = False  # score drops are differences of logits, below bfloat16's resolution
    description = "Score drop when a sliding window of the image is covered."
    reference = "Zeiler & Fergus 2014; Captum Occlusion"
    options = (
        Option("window", (32, 32), "window size in pixels", minimum=1, maximum=4096),
        Option("stride", (16, 16), "stride in pixels", minimum=1, maximum=4096),
        Option("fill", 0.0, "fill value in the normalised input space", minimum=-1e3, maximum=1e3),
        Option(
            "batch_size",
            0,
            "occluded copies per forward pass (0: by memory budget)",
            minimum=0,
            maximum=4096,
        ),
        Option(
            "incremental",
            True,
            "recompute only the activations each window changes (exact; falls back to "
            "full forward passes for models it cannot follow, or when it would not save work)",
        ),
        Option(
            "approximate",
            False,
            "with incremental: cap each changed region at projective_field of its layer's "
            "side (faster, not exact; error in docs/methods.md)",
        ),
        Option(
            "projective_field",
            0.6,
            "with approximate: the largest share of a layer's side a changed region keeps",
            minimum=0.05,
            maximum=1.0,
        ),
    )

    def heatmaps(self, attribution: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return signed_heatmaps(attribution)

    def run(self, batch: BatchInput) -> BatchResult:
        logits, rows, attribution, variant = self._attributions(batch)
        heat, empty = self.heatmaps(attribution)
        samples = package(rows, logits, heat, attribution, empty, {})
        result = self.result(batch, samples, logits=logits)
        if variant:
            result.variant = variant
        return result

    def attributions(
        self, batch: BatchInput
    ) -> tuple[torch.Tensor, Rows, torch.Tensor, dict[str, torch.Tensor]]:
        logits, rows, attribution, _ = self._attributions(batch)
        return logits, rows, attribution, {}

    def _attributions(self, batch: BatchInput) -> tuple[torch.Tensor, Rows, torch.Tensor, str]:
        """Logits, target rows, attributions, and the incremental path's variant (empty
        when every copy ran in full)."""
        (wh, ww), (sh, sw) = batch.options["window"], batch.options["stride"]
        fill = float(batch.options["fill"])
        x = batch.x
        height, width = x.shape[-2:]
        windows = [
            (top, left)
            for top in window_starts(height, wh, sh)
            for left in window_starts(width, ww, sw)
        ]
        logits, rows = target_rows(batch)
        incremental, variant = None, ""
        if batch.options.get("incremental", True):
            share = 1.0
            if batch.options.get("approximate", False):
                share = float(batch.options.get("projective_field", 1.0))
            incremental = incremental_occluded_logits(
                batch.model, x, logits, windows, (wh, ww), fill, int(batch.options["batch_size"]),
                share,
            )  # fmt: skip
        if incremental is not None:
            occluded_scores = incremental.logits
            variant = APPROXIMATE_VARIANT if incremental.cut else INCREMENTAL_VARIANT
        else:
            occluded_scores = self._occluded_scores(batch, logits, windows, (wh, ww), fill)
        drops = rows.scores(logits)[:, None] - occluded_scores[rows.sample, :, rows.target]
        total = x.new_zeros((len(rows), height, width))
        coverage = x.new_zeros((height, width))
        for index, (top, left) in enumerate(windows):
            total[:, top : top + wh, left : left + ww] += drops[:, index, None, None]
            coverage[top : top + wh, left : left + ww] += 1
        mean_drop = torch.where(
            coverage > 0, total / coverage.clamp_min(1), torch.zeros_like(total)
        )
        attribution = mean_drop[:, None].expand(-1, x.shape[1], -1, -1).contiguous()
        return logits, rows, attribution, variant

    @staticmethod
    def _occluded_scores(
        batch: BatchInput,
        logits: torch.Tensor,
        windows: list[tuple[int, int]],
        window: tuple[int, int],
        fill: float,
    ) -> torch.Tensor:
        """Logits ``(N, len(windows), C)`` of every occluded copy, each a full forward pass."""
        (wh, ww), x = window, batch.x
        occluded_scores = logits.new_empty((x.shape[0], len(windows), logits.shape[1]))
        chunk = rows_per_pass(batch.model, int(batch.options["batch_size"]))
        with torch.inference_mode():
            for start, stop in spans(x.shape[0] * len(windows), chunk):
                pairs = list(range(start, stop))
                inputs = x[[p // len(windows) for p in pairs]].clone()
                for row, pair in enumerate(pairs):
                    top, left = windows[pair % len(windows)]
                    inputs[row, :, top : top + wh, left : left + ww] = fill
                flat = occluded_scores.view(-1, logits.shape[1])
                flat[start:stop] = batch.model.forward(inputs)
        return occluded_scores
