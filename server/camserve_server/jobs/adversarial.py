"""Adversarial examples (FGSM, PGD) and fooling images.

Goodfellow et al. 2015, FGSM: ``x' = clip(x + eps * sign(grad_x L(x, y)))``, one step.
Madry et al. 2018, PGD: from a random point of the L-inf ball, repeat
``x <- Proj_{||x - x0||_inf <= eps}(x + a * sign(grad_x L))``. Untargeted: ascend the
cross-entropy of the model's prediction on the original; targeted: descend the
cross-entropy of ``target``. ``eps`` and the step are in 0..1 pixel units whatever the
model's normalisation: the attack runs on pixels, the model sees them normalised.
The original is clamped into 0..1 first; every iterate stays within 0..1 and eps of it.

Nguyen et al. 2015, "Deep Neural Networks are Easily Fooled": an image, from noise or
from any picture, that the model gives to a chosen class with a chosen confidence;
here by gradient ascent on ``log softmax(f(x))_c`` (their gradient-ascent variant),
stopping as soon as ``p_c >= confidence``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InvalidArgument
from ..models import ExplainableModel
from ..options import Option
from .base import Job, JobMethod, JobOutcome, JobRequest, Normalisation, StepEvent
from .common import (
    MAX_STEPS,
    NOISE_OPTION,
    PRIOR_OPTIONS,
    SIZE_OPTION,
    batch,
    image_outcome,
    image_prior,
    lr_option,
    normalisation_of,
    output_size,
    steps_option,
)
from .optimisation import ImageOptimisation
from .parameterisation import PixelImage, device_generator, noise_pixels

DEFAULT_EPSILON = 8.0 / 255.0


class Adversarial(JobMethod):
    """An L-inf bounded perturbation that changes (or targets) the model's prediction."""

    id = "adversarial"
    family = "adversarial"
    summary = (
        "FGSM or PGD adversarial example within an L-inf budget epsilon (0..1 pixel units); "
        "targeted when a target is given"
    )
    reference = "Goodfellow et al. 2015 (FGSM); Madry et al. 2018 (PGD)"
    needs_image = True
    options = (
        Option("attack", "pgd", "fgsm: one step; pgd: steps", choices=("pgd", "fgsm")),
        Option(
            "epsilon",
            DEFAULT_EPSILON,
            "L-inf budget in 0..1 pixel units, in (0, 1]",
            minimum=0.0,
            maximum=1.0,
        ),
        Option("steps", 10, "PGD iterations", minimum=1, maximum=MAX_STEPS),
        Option("step_size", 0.0, "PGD step in pixels; 0: epsilon/4", minimum=0.0, maximum=1.0),
        Option("random_start", True, "PGD starts at a random point of the ball"),
    )

    def check(self, model: ExplainableModel, request: JobRequest) -> JobRequest:
        epsilon = float(request.options["epsilon"])
        if not 0.0 < epsilon <= 1.0:
            raise InvalidArgument(f"epsilon must be in (0, 1] (0..1 pixel units), got {epsilon}")
        if request.options["step_size"] == 0.0:
            request.options["step_size"] = epsilon / 4.0
        return request

    def create(self, model: ExplainableModel, request: JobRequest) -> Job:
        assert request.image is not None
        return AttackJob(model, normalisation_of(request), request)


class AttackJob:
    """FGSM (one step) or PGD (``steps`` steps), each step one forward and one backward."""

    def __init__(
        self, model: ExplainableModel, normalisation: Normalisation, request: JobRequest
    ) -> None:
        assert request.image is not None
        options = request.options
        self.model = model
        self.normalisation = normalisation
        self.epsilon = float(options["epsilon"])
        fgsm = options["attack"] == "fgsm"
        self.step_size = self.epsilon if fgsm else float(options["step_size"])
        self.total_steps = 1 if fgsm else int(options["steps"])
        self.original = normalisation.to_pixels(batch(request.image)).clamp_(0.0, 1.0)
        with torch.inference_mode():
            self.original_logits = model.module(normalisation.from_pixels(self.original))[0]
        self.targeted = request.target is not None
        label = request.target if request.target is not None else int(self.original_logits.argmax())
        self.label = torch.tensor([label], device=model.device)
        self.pixels = self.original.clone()
        if not fgsm and options["random_start"]:
            generator = device_generator(model.device, request.seed)
            noise = torch.rand(self.original.shape, generator=generator, device=model.device)
            self.pixels = self._project(self.original + (noise * 2.0 - 1.0) * self.epsilon)
        self.trace: list[float] = []

    def _project(self, pixels: torch.Tensor) -> torch.Tensor:
        """Into the eps-ball around the original, then into 0..1 (both boxes: both hold)."""
        low = (self.original - self.epsilon).clamp(min=0.0)
        high = (self.original + self.epsilon).clamp(max=1.0)
        return torch.maximum(torch.minimum(pixels, high), low)

    def step(self) -> StepEvent:
        if len(self.trace) >= self.total_steps:
            raise RuntimeError("the job has finished")
        with torch.inference_mode(False), torch.enable_grad():
            pixels = self.pixels.detach().clone().requires_grad_(True)
            logits = self.model.module(self.normalisation.from_pixels(pixels))
            loss = F.cross_entropy(logits, self.label)
            (gradient,) = torch.autograd.grad(loss, pixels)
        direction = -1.0 if self.targeted else 1.0  # descend towards a target, else ascend
        with torch.no_grad():
            self.pixels = self._project(pixels + direction * self.step_size * gradient.sign())
            probability = float(logits.softmax(1)[0, int(self.label)])
        value = float(loss.detach())
        self.trace.append(value)
        return StepEvent(
            step=len(self.trace),
            total=self.total_steps,
            loss=value if self.targeted else -value,
            objective=probability,
            done=len(self.trace) >= self.total_steps,
        )

    def preview(self) -> torch.Tensor:
        return self.normalisation.from_pixels(self.pixels)[0].float().cpu()

    def outcome(self) -> JobOutcome:
        shown = (0.5 + (self.pixels - self.original) / (2.0 * self.epsilon)).clamp(0.0, 1.0)
        return image_outcome(
            self.model,
            self.normalisation.from_pixels(self.pixels),
            self.trace,
            images={
                "original": self.normalisation.from_pixels(self.original)[0],
                "perturbation": self.normalisation.from_pixels(shown)[0],
            },
            extra_logits={"original": self.original_logits},
        )


class Fooling(JobMethod):
    """An image the model assigns to ``target`` with probability >= ``confidence``."""

    id = "fooling"
    family = "adversarial"
    summary = (
        "from noise (or a given image) to an image classified as the target with the "
        "chosen confidence; stops once reached"
    )
    reference = "Nguyen et al. 2015, Deep Neural Networks are Easily Fooled"
    needs_target = True
    options = (
        steps_option(200),
        lr_option(0.02),
        Option("confidence", 0.99, "stop once p(target) reaches it", minimum=0.0, maximum=1.0),
        SIZE_OPTION,
        NOISE_OPTION,
        *PRIOR_OPTIONS,
    )

    def check(self, model: ExplainableModel, request: JobRequest) -> JobRequest:
        if request.image is None:
            output_size(model, request.options)
        return request

    def create(self, model: ExplainableModel, request: JobRequest) -> Job:
        options = request.options
        normalisation = normalisation_of(request)
        if request.image is not None:
            start = normalisation.to_pixels(batch(request.image))
        else:
            generator = device_generator(model.device, request.seed)
            size = output_size(model, options)
            start = noise_pixels(size, generator, model.device, float(options["noise_std"]))
        target, confidence = int(request.target or 0), float(options["confidence"])

        def loss(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            log_probabilities = model.module(normalisation.from_pixels(pixels)).log_softmax(1)
            value = -log_probabilities[0, target] + image_prior(pixels, options)
            return value, log_probabilities[0, target].exp()

        return ImageOptimisation(
            model,
            request,
            PixelImage(start),
            loss,
            stop=lambda probability: probability >= confidence,
        )
