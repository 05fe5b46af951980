"""The job most methods share: minimise ``loss(pixels)`` over an image parameterisation.

One ``step`` is one forward, one backward and one optimiser update (Adam by default,
plain normalised-gradient ascent is DeepDream's own job). The loss function returns the
scalar to minimise and the objective to report; an optional ``stop`` predicate on the
objective ends the job early, before the update that would follow.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..models import ExplainableModel
from .base import JobOutcome, JobRequest, StepEvent
from .common import image_outcome, normalisation_of
from .parameterisation import ImageParameterisation

LossFunction = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class ImageOptimisation:
    """A ``Job``: Adam on ``parameterisation`` for ``steps`` steps, or until ``stop``.

    ``steps`` and the learning rate are the request's ``steps`` and ``lr`` options
    (``steps_option``, ``lr_option``); the image is normalised as the request says.
    """

    def __init__(
        self,
        model: ExplainableModel,
        request: JobRequest,
        parameterisation: ImageParameterisation,
        loss: LossFunction,
        *,
        stop: Callable[[float], bool] | None = None,
        decay: bool = False,
        images: dict[str, torch.Tensor] | None = None,
        extra_logits: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.normalisation = normalisation_of(request)
        self.parameterisation = parameterisation
        self.loss = loss
        self.total_steps = int(request.options["steps"])
        self.stop = stop
        self.optimiser = torch.optim.Adam(
            parameterisation.parameters(), lr=float(request.options["lr"])
        )
        # decay: the learning rate falls linearly to a tenth over the steps (fine convergence)
        self.schedule = (
            torch.optim.lr_scheduler.LinearLR(
                self.optimiser, 1.0, 0.1, total_iters=max(1, self.total_steps - 1)
            )
            if decay
            else None
        )
        self.trace: list[float] = []
        self.objectives: list[float] = []
        self.images = images or {}
        self.extra_logits = extra_logits or {}
        self.finished = False

    def step(self) -> StepEvent:
        """One forward and backward pass and one update (none when ``stop`` holds)."""
        if self.finished:
            raise RuntimeError("the job has finished")
        self.optimiser.zero_grad(set_to_none=True)
        with torch.inference_mode(False), torch.enable_grad():
            loss, objective = self.loss(self.parameterisation.pixels())
            loss_value, objective_value = float(loss.detach()), float(objective.detach())
            stopping = self.stop is not None and self.stop(objective_value)
            if not stopping:
                loss.backward()  # type: ignore[no-untyped-call]
                self.optimiser.step()
                self.parameterisation.after_step()
                if self.schedule is not None:
                    self.schedule.step()
        self.trace.append(loss_value)
        self.objectives.append(objective_value)
        self.finished = stopping or len(self.trace) >= self.total_steps
        return StepEvent(
            step=len(self.trace),
            total=self.total_steps,
            loss=loss_value,
            objective=objective_value,
            done=self.finished,
        )

    def current(self) -> torch.Tensor:
        """The current image, normalised ``(1, 3, H, W)`` on the device, no graph."""
        with torch.no_grad():
            return self.normalisation.from_pixels(self.parameterisation.pixels().detach())

    def preview(self) -> torch.Tensor:
        return self.current()[0].float().cpu()

    def outcome(self) -> JobOutcome:
        return image_outcome(
            self.model,
            self.current(),
            self.trace,
            images=self.images,
            extra_logits=self.extra_logits,
        )
