"""Activation maximisation: the image a class or a channel "wants to see".

Simonyan et al. 2014, "Deep Inside Convolutional Networks": ``x* = argmax_x S_c(x) -
R(x)`` for the class score (logit) ``S_c``; for a channel ``k`` at a layer, ``S`` is its
mean activation ``mean_ij A_k(x)[i, j]`` (Erhan et al. 2009). Olah et al. 2017,
"Feature Visualization": optimise in a decorrelated Fourier basis, through random
jitter, scaling and rotation. ``R`` is a weighted sum of the L2, total-variation and
blur priors. Starts from seeded noise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InvalidArgument
from ..models import ExplainableModel
from ..models.capture import forward_capture
from ..options import Option
from .base import Job, JobMethod, JobRequest
from .common import (
    NOISE_OPTION,
    PRIOR_OPTIONS,
    SIZE_OPTION,
    image_prior,
    lr_option,
    normalisation_of,
    output_size,
    steps_option,
)
from .layer_choice import layer_channels, spatial_layer
from .optimisation import ImageOptimisation
from .parameterisation import (
    FourierImage,
    ImageParameterisation,
    PixelImage,
    device_generator,
    noise_pixels,
)
from .transforms import Robustness


class ActivationMaximization(JobMethod):
    """Gradient ascent on a class logit, or on one channel's mean activation at a layer."""

    id = "activation_maximization"
    family = "activation_maximization"
    summary = (
        "the image that maximises a class logit (target) or a channel's mean activation "
        "(layer, channel), from noise"
    )
    reference = "Simonyan et al. 2014; Olah et al. 2017, Feature Visualization"
    uses_layer = True
    options = (
        steps_option(128),
        lr_option(0.05),
        Option(
            "parameterization",
            "fourier",
            "decorrelated Fourier basis (Olah et al.) or raw pixels",
            choices=("fourier", "pixel"),
        ),
        SIZE_OPTION,
        NOISE_OPTION,
        Option("jitter", 2.0, "random shift, pixels", minimum=0.0, maximum=64.0),
        Option("scale", 0.05, "random scale, 1 +- scale", minimum=0.0, maximum=0.5),
        Option("rotate", 5.0, "random rotation, degrees", minimum=0.0, maximum=45.0),
        *PRIOR_OPTIONS,
    )

    def check(self, model: ExplainableModel, request: JobRequest) -> JobRequest:
        output_size(model, request.options)
        if request.channel is None:
            if request.target is None:
                raise InvalidArgument(
                    f"activation_maximization needs a target class in [0, {model.num_classes - 1}]"
                    " or a channel (with a layer)"
                )
            if request.layer:
                raise InvalidArgument(
                    "a layer without a channel: give a channel index to visualise a channel, "
                    "or no layer to visualise the target class"
                )
            return request
        if request.target is not None:
            raise InvalidArgument("give either a target class or a channel, not both")
        layer = spatial_layer(model, request.layer, "a channel visualisation")
        count = layer_channels(model, layer)
        if not 0 <= request.channel < count:
            raise InvalidArgument(
                f"channel {request.channel} is out of range for layer {layer!r}: "
                f"it has {count} channels (0..{count - 1})"
            )
        request.layer = layer
        return request

    def create(self, model: ExplainableModel, request: JobRequest) -> Job:
        options = request.options
        normalisation = normalisation_of(request)
        generator = device_generator(model.device, request.seed)
        size = output_size(model, options)
        parameterisation: ImageParameterisation
        start = noise_pixels(size, generator, model.device, float(options["noise_std"]))
        if options["parameterization"] == "fourier":
            parameterisation = FourierImage(start)
        else:
            parameterisation = PixelImage(start)
        robustness = Robustness(
            float(options["jitter"]), float(options["scale"]), float(options["rotate"])
        )
        objective = _objective(model, request)

        def loss(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            seen = robustness.apply(pixels, generator)
            value = objective(normalisation.from_pixels(seen))
            return -value + image_prior(pixels, options), value

        return ImageOptimisation(model, request, parameterisation, loss)


def _objective(
    model: ExplainableModel, request: JobRequest
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The scalar to maximise on a normalised batch ``(1, 3, H, W)``."""
    if request.channel is None:
        target = int(request.target if request.target is not None else 0)

        def class_logit(x: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = model.module(x)
            return logits[0, target]

        return class_logit
    layer, channel = str(request.layer), int(request.channel)

    def channel_mean(x: torch.Tensor) -> torch.Tensor:
        captured = forward_capture(model, x, [layer], logits=False)
        return captured.layers[layer][0, channel].mean()

    return channel_mean
