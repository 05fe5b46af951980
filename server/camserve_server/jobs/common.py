"""Options and helpers several job methods share."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InvalidArgument
from ..models import ExplainableModel
from ..options import Option
from .base import MAX_JOB_SIDE, JobOutcome, JobRequest, Normalisation
from .regularisers import blur_penalty, l2_penalty, total_variation

MAX_STEPS = 10_000  # per job; the server's configured step budget is usually lower


def steps_option(default: int) -> Option:
    return Option(
        "steps", default, "optimisation steps (one pass each)", minimum=1, maximum=MAX_STEPS
    )


def lr_option(default: float, help: str = "Adam learning rate") -> Option:
    return Option("lr", default, help, minimum=1e-6, maximum=10.0)


SIZE_OPTION = Option(
    "size",
    0,
    "output side in pixels (square); 0: the model's input size",
    minimum=0,
    maximum=MAX_JOB_SIDE,
)
NOISE_OPTION = Option(
    "noise_std", 0.1, "std of the starting noise around grey 0.5", minimum=0.0, maximum=1.0
)
PRIOR_OPTIONS = (
    Option("l2", 0.0, "weight of the L2 prior", minimum=0.0, maximum=1e6),
    Option("tv", 0.0, "weight of the total-variation prior", minimum=0.0, maximum=1e6),
    Option("blur", 0.0, "weight of the blur penalty", minimum=0.0, maximum=1e6),
)


def normalisation_of(request: JobRequest) -> Normalisation:
    """The request's normalisation (``validate`` has checked it is set)."""
    if request.normalisation is None:
        raise ValueError("JobRequest.normalisation must be set by the service")
    return request.normalisation


def output_size(model: ExplainableModel, options: dict[str, Any]) -> tuple[int, int]:
    """``size`` as (height, width), the model's input size when 0."""
    side = int(options["size"])
    if side == 0:
        return model.input_size
    if side < 8:
        raise InvalidArgument(f"option size must be 0 or in [8, {MAX_JOB_SIDE}], got {side}")
    return (side, side)


def image_prior(pixels: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
    """``l2 * L2 + tv * TV + blur * blur_penalty`` for the weights in ``options``."""
    total = pixels.new_zeros(())
    if options["l2"]:
        total = total + float(options["l2"]) * l2_penalty(pixels)
    if options["tv"]:
        total = total + float(options["tv"]) * total_variation(pixels)
    if options["blur"]:
        total = total + float(options["blur"]) * blur_penalty(pixels)
    return total


def batch(image: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` to ``(1, 3, H, W)`` float32, detached."""
    return image.detach().to(torch.float32).unsqueeze(0)


def image_outcome(
    model: ExplainableModel,
    x: torch.Tensor,
    trace: list[float],
    *,
    images: dict[str, torch.Tensor] | None = None,
    extra_logits: dict[str, torch.Tensor] | None = None,
) -> JobOutcome:
    """The outcome of a job whose result is the normalised image ``x`` ``(1, 3, H, W)``: the
    image, the model's logits for it, the trace and the extras, all float32 on the CPU."""
    with torch.inference_mode():
        logits = model.module(x)[0]
    return JobOutcome(
        tensor=x[0].float().cpu(),
        images={name: image.float().cpu() for name, image in (images or {}).items()},
        trace=list(trace),
        logits=logits.float().cpu(),
        extra_logits={name: v.float().cpu() for name, v in (extra_logits or {}).items()},
    )
