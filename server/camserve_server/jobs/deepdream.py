"""DeepDream: amplify whatever a layer already sees in an image.

Mordvintsev, Olah & Tyka 2015, "Inceptionism": gradient ascent on
``0.5 * mean(A_l(x)^2)`` (the layer's squared activation norm) with normalised steps
``x <- x + lr * g / mean|g|``, each through a random jitter (a roll of the image),
over octaves: the image is processed from a small scale up, the detail added at one
scale carried to the next. Steps are in 0..1 pixels, clamped after each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import ExplainableModel
from ..models.capture import forward_capture
from ..options import Option
from .base import Job, JobMethod, JobOutcome, JobRequest, Normalisation, StepEvent
from .common import batch, image_outcome, lr_option, normalisation_of, steps_option
from .layer_choice import spatial_layer
from .parameterisation import device_generator


class DeepDream(JobMethod):
    """Maximise the squared norm of a layer's activations, octave by octave."""

    id = "deepdream"
    family = "deepdream"
    summary = "amplify a layer's activations on the input image (squared norm), over octaves"
    reference = "Mordvintsev, Olah & Tyka 2015, Inceptionism: Going Deeper into Neural Networks"
    needs_image = True
    uses_layer = True
    options = (
        steps_option(30),
        lr_option(0.01, help="normalised step size in pixels"),
        Option("octaves", 3, "image scales, smallest first", minimum=1, maximum=8),
        Option("octave_scale", 1.4, "ratio between scales", minimum=1.0, maximum=4.0),
        Option("jitter", 4, "random roll, pixels", minimum=0, maximum=64),
    )

    def check(self, model: ExplainableModel, request: JobRequest) -> JobRequest:
        request.layer = spatial_layer(model, request.layer, "deepdream")
        return request

    def create(self, model: ExplainableModel, request: JobRequest) -> Job:
        assert request.image is not None and request.layer is not None
        return DreamJob(model, normalisation_of(request), request)


class DreamJob:
    """The octave loop as a stepped job; ``steps`` are shared out over the octaves."""

    def __init__(
        self, model: ExplainableModel, normalisation: Normalisation, request: JobRequest
    ) -> None:
        assert request.image is not None and request.layer is not None
        options = request.options
        self.model, self.normalisation, self.layer = model, normalisation, request.layer
        self.lr, self.jitter = float(options["lr"]), int(options["jitter"])
        self.total_steps = int(options["steps"])
        self.generator = device_generator(model.device, request.seed)
        source = normalisation.to_pixels(batch(request.image)).clamp_(0.0, 1.0)
        height, width = source.shape[-2:]
        octaves = min(int(options["octaves"]), self.total_steps)
        scale = float(options["octave_scale"])
        sizes = [
            (max(8, round(height / scale**i)), max(8, round(width / scale**i)))
            for i in reversed(range(octaves))
        ]
        self.bases = [_resize(source, size) for size in sizes]
        share, extra = divmod(self.total_steps, octaves)
        self.schedule = [share + (1 if i >= octaves - extra else 0) for i in range(octaves)]
        self.octave, self.in_octave = 0, 0
        self.pixels = self.bases[0].clone()
        self.trace: list[float] = []

    def _roll(self) -> tuple[int, int]:
        if self.jitter == 0:
            return 0, 0
        shift = torch.randint(
            -self.jitter, self.jitter + 1, (2,), generator=self.generator, device=self.pixels.device
        )
        dy, dx = (int(v) for v in shift.tolist())
        return dy, dx

    def step(self) -> StepEvent:
        if len(self.trace) >= self.total_steps:
            raise RuntimeError("the job has finished")
        dy, dx = self._roll()
        with torch.inference_mode(False), torch.enable_grad():
            rolled = torch.roll(self.pixels, (dy, dx), (2, 3)).requires_grad_(True)
            captured = forward_capture(
                self.model, self.normalisation.from_pixels(rolled), [self.layer], logits=False
            )
            objective = 0.5 * captured.layers[self.layer].pow(2).mean()
            (gradient,) = torch.autograd.grad(objective, rolled)
        with torch.no_grad():
            gradient = torch.roll(gradient, (-dy, -dx), (2, 3))
            gradient = gradient / gradient.abs().mean().clamp(min=1e-12)
            self.pixels = (self.pixels + self.lr * gradient).clamp_(0.0, 1.0)
        value = float(objective.detach())
        self.trace.append(-value)
        self.in_octave += 1
        if self.in_octave >= self.schedule[self.octave] and self.octave + 1 < len(self.bases):
            self._next_octave()
        return StepEvent(
            step=len(self.trace),
            total=self.total_steps,
            loss=-value,
            objective=value,
            done=len(self.trace) >= self.total_steps,
        )

    def _next_octave(self) -> None:
        """Carry the detail added at this scale up to the next one."""
        detail = self.pixels - self.bases[self.octave]
        self.octave, self.in_octave = self.octave + 1, 0
        base = self.bases[self.octave]
        self.pixels = (base + _resize(detail, tuple(base.shape[-2:]))).clamp_(0.0, 1.0)

    def preview(self) -> torch.Tensor:
        return self.normalisation.from_pixels(self.pixels)[0].float().cpu()

    def outcome(self) -> JobOutcome:
        return image_outcome(self.model, self.normalisation.from_pixels(self.pixels), self.trace)


def _resize(pixels: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels.clone()
    return F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
