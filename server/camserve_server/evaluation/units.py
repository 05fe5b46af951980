"""The work of an evaluation on a device worker, one unit (a method on a few images) at
a time: the maps and scores of the model as served, random maps, and the maps of a
randomised copy of the model for the sanity check.

Everything here runs on the worker's device thread and returns CPU arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from ..errors import InvalidArgument
from ..faithfulness import Faithfulness, add_faithfulness, score_maps
from ..methods.base import BatchInput, TargetRequest
from ..methods.engine import run_batch
from ..models import ExplainableModel
from .plan import MethodPlan
from .randomisation import RandomisedCopy, Stage, cascade, parameterised_layers

Maps = npt.NDArray[np.float32]
Scores = dict[str, npt.NDArray[np.float64]]


@dataclass(frozen=True)
class ChunkMaps:
    """A method's maps ``(n, H, W)`` of a chunk, its scores per image, and the seconds."""

    maps: Maps
    scores: Scores
    seconds: float


def top_classes(model: ExplainableModel, x: torch.Tensor) -> list[int]:
    """Each input's most probable class."""
    with torch.no_grad():
        return [int(c) for c in model.forward(x.to(model.device)).argmax(dim=1).tolist()]


def explain_chunk(
    model: ExplainableModel,
    plan: MethodPlan,
    x: torch.Tensor,
    targets: list[int],
    faithfulness: Faithfulness | None,
) -> ChunkMaps:
    """One method's maps of inputs ``x`` for ``targets``, scored when ``faithfulness``."""
    started = time.perf_counter()
    x = x.to(model.device)
    requests = [TargetRequest(classes=(target,)) for target in targets]
    batch = BatchInput(model, x, requests, plan.layer, dict(plan.options), [None] * len(targets))
    samples = run_batch(plan.method, batch).samples
    if faithfulness is not None:
        add_faithfulness(faithfulness, model, x, samples, logits_in_float32=True)
    heatmaps = [sample.heatmaps for sample in samples]
    assert all(h is not None for h in heatmaps), "a method with maps per target gave none"
    maps = torch.cat([h for h in heatmaps if h is not None]).float().cpu().numpy()
    names = faithfulness.scores if faithfulness is not None else ()
    scores = {
        name: torch.cat([s.metrics[name] for s in samples]).double().cpu().numpy() for name in names
    }
    return ChunkMaps(maps=maps, scores=scores, seconds=time.perf_counter() - started)


def random_chunk(
    model: ExplainableModel,
    x: torch.Tensor,
    targets: list[int],
    indices: range,
    seed: int,
    faithfulness: Faithfulness | None,
) -> ChunkMaps:
    """Uniformly random maps in [0, 1), one generator per image (seeded by the image's
    index), scored as a method's are."""
    started = time.perf_counter()
    size = (int(x.shape[-2]), int(x.shape[-1]))
    maps = torch.stack(
        [torch.rand(size, generator=torch.Generator().manual_seed(seed + i)) for i in indices]
    )
    scores: Scores = {}
    if faithfulness is not None:
        device_x = x.to(model.device)
        classes = torch.tensor(targets, device=model.device)
        found = score_maps(faithfulness, model, device_x, classes, maps.to(model.device))
        scores = {name: value.double().cpu().numpy() for name, value in found.items()}
    return ChunkMaps(maps.numpy(), scores, time.perf_counter() - started)


@dataclass
class SanityModel:
    """A randomised copy of one worker's replica, stepped through the cascade in place:
    ``at(k)`` makes it the model after stage ``k`` (0-based), starting again from the
    learned parameters when ``k`` is not the next stage."""

    copy: RandomisedCopy
    model: ExplainableModel
    stages: list[Stage]
    current: int = -1

    @classmethod
    def of(
        cls, served: ExplainableModel, stages: int, seed: int, probe: torch.Tensor
    ) -> SanityModel:
        """A copy of ``served`` on its device, its parameterised layers found with one
        forward pass of ``probe`` ``(1, 3, H, W)``."""
        try:
            copy = RandomisedCopy(served.module, seed)
        except Exception as exc:  # a module that cannot be deep-copied
            raise InvalidArgument(
                f"model {served.name!r} cannot be copied for the sanity check: {exc}"
            ) from None
        layers = parameterised_layers(copy.module, probe.to(served.device))
        if not layers:
            raise InvalidArgument(f"model {served.name!r} has no parameterised layer to randomise")
        model = ExplainableModel(
            copy.module,
            input_size=served.input_size,
            name=f"{served.name} (randomised)",
            default_layer=served.default_layer or None,
            device=served.device,
            memory_budget_bytes=served.memory_budget_bytes,
            channels_last=served.channels_last,
        )
        return cls(copy=copy, model=model, stages=cascade(layers, stages))

    def at(self, stage: int) -> ExplainableModel:
        """The copy after ``stage``: the next stage's layers re-initialised on top of the
        current ones, or, for any other stage, the cascade again from the learned weights."""
        if stage != self.current:
            if stage != self.current + 1:
                self.copy.reset()
                self.current = -1
            for k in range(self.current + 1, stage + 1):
                self.copy.randomise(self.stages[k])
            self.current = stage
        return self.model
