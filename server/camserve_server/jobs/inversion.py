"""Feature inversion: the image whose features at a layer match a given image's.

Mahendran & Vedaldi 2015, "Understanding Deep Image Representations by Inverting
Them": ``x* = argmin_x ||Phi(x) - Phi(x0)||^2 / ||Phi(x0)||^2 + lambda_TV TV(x)``,
from seeded noise, with a total-variation prior (``beta = 2``) that keeps the
reconstruction a natural-looking image. The reported objective is the relative
feature distance ``||Phi(x) - Phi(x0)|| / ||Phi(x0)||``.
"""

from __future__ import annotations

import torch

from ..models import ExplainableModel
from ..models.capture import forward_capture
from ..options import Option
from .base import Job, JobMethod, JobRequest
from .common import NOISE_OPTION, batch, lr_option, normalisation_of, steps_option
from .layer_choice import spatial_layer
from .optimisation import ImageOptimisation
from .parameterisation import (
    FourierImage,
    ImageParameterisation,
    PixelImage,
    device_generator,
    noise_pixels,
)
from .regularisers import total_variation


class FeatureInversion(JobMethod):
    """Reconstruct an image from its features at a layer (default: the model's default layer)."""

    id = "feature_inversion"
    family = "feature_inversion"
    summary = "reconstruct the input image from its features at a layer, with a TV prior"
    reference = "Mahendran & Vedaldi 2015, Understanding Deep Image Representations"
    needs_image = True
    uses_layer = True
    options = (
        steps_option(200),
        lr_option(0.1),
        Option(
            "parameterization",
            "pixel",
            "decorrelated Fourier basis (a preconditioner, Olah et al.) or raw pixels",
            choices=("fourier", "pixel"),
        ),
        Option("tv", 0.005, "weight of the TV prior", minimum=0.0, maximum=1e6),
        NOISE_OPTION,
    )

    def check(self, model: ExplainableModel, request: JobRequest) -> JobRequest:
        request.layer = spatial_layer(model, request.layer, "feature inversion")
        return request

    def create(self, model: ExplainableModel, request: JobRequest) -> Job:
        assert request.image is not None and request.layer is not None
        options, layer = request.options, request.layer
        normalisation = normalisation_of(request)
        source = batch(request.image)
        with torch.no_grad():
            reference = forward_capture(model, source, [layer], logits=False).layers[layer]
        scale = reference.pow(2).sum().clamp(min=1e-12)
        tv_weight = float(options["tv"])
        generator = device_generator(model.device, request.seed)
        start = noise_pixels(
            tuple(source.shape[-2:]),  # type: ignore[arg-type]
            generator,
            model.device,
            float(options["noise_std"]),
        )

        parameterisation: ImageParameterisation = (
            FourierImage(start) if options["parameterization"] == "fourier" else PixelImage(start)
        )

        def loss(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            captured = forward_capture(
                model, normalisation.from_pixels(pixels), [layer], logits=False
            )
            distance = (captured.layers[layer] - reference).pow(2).sum() / scale
            return distance + tv_weight * total_variation(pixels), distance.sqrt()

        return ImageOptimisation(
            model, request, parameterisation, loss, decay=True, images={"original": source[0]}
        )
