"""The faithfulness step of a batch: after the method, score every map it made."""

from __future__ import annotations

import torch

from ..methods.base import SampleResult
from ..models import ExplainableModel
from .base import Perturbations, ScoredRows
from .passes import run_passes
from .registry import families_for
from .request import Faithfulness


class CleanInputs(Perturbations):
    """The batch's own inputs, run again in float32 when the method ran under autocast,
    so that both ends of every comparison are float32 probabilities."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.probabilities = x.new_empty((0,))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def inputs(self, start: int, stop: int) -> torch.Tensor:
        return self.x[start:stop]

    def take(self, start: int, stop: int, probabilities: torch.Tensor) -> None:
        if start == 0:
            self.probabilities = probabilities.new_empty((len(self), probabilities.shape[1]))
        self.probabilities[start:stop] = probabilities


def add_faithfulness(
    request: Faithfulness,
    model: ExplainableModel,
    x: torch.Tensor,
    samples: list[SampleResult],
    *,
    logits_in_float32: bool,
) -> int:
    """Add ``request``'s scores of every map to its sample's ``metrics`` (one value per
    target, by score name); returns the forward passes run (inputs, not chunks).

    ``x`` ``(N, 3, H, W)`` are the inputs the method explained. The clean probability of
    each target is the softmax of the sample's logits when ``logits_in_float32``, else of
    a float32 pass over ``x``."""
    rows = ScoredRows.of(x, samples)
    families = families_for(rows, request)
    clean_inputs = None if logits_in_float32 else CleanInputs(x)
    passes = run_passes(model, [*families, *([clean_inputs] if clean_inputs else [])])
    if clean_inputs is not None:
        probabilities = clean_inputs.probabilities
    else:
        logits = torch.stack([sample.logits for sample in samples]).float()
        probabilities = torch.softmax(logits, dim=1)
    clean = probabilities[rows.sample, rows.target]
    values: dict[str, torch.Tensor] = {}
    for family in families:
        values.update(family.scores(clean))
    for name in request.scores:
        for sample, part in zip(samples, rows.split(values[name]), strict=True):
            sample.metrics[name] = part
    return passes


def score_maps(
    request: Faithfulness,
    model: ExplainableModel,
    x: torch.Tensor,
    classes: torch.Tensor,
    maps: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The scores ``(N,)`` of any maps ``(N, H, W)`` in [0, 1], one per input ``x[i]``
    and class ``classes[i]`` (a random map, another library's), as the server scores
    a method's."""
    samples = [
        SampleResult(
            targets=classes[i : i + 1],
            heatmaps=maps[i : i + 1],
            raw=None,
            empty=torch.zeros(1, dtype=torch.bool),
            logits=x.new_empty(0),
        )
        for i in range(x.shape[0])
    ]
    add_faithfulness(request, model, x, samples, logits_in_float32=False)
    return {
        name: torch.cat([sample.metrics[name] for sample in samples]) for name in request.scores
    }
