"""Texture synthesis and style transfer with Gram matrices.

Gatys, Ecker & Bethge 2015, "Texture Synthesis Using Convolutional Neural Networks":
a texture is the set of Gram matrices ``G_l = F_l F_l^T / (h w)`` of the features at a
few layers; synthesis minimises ``(1/L) sum_l ||G_l(x) - G_l(s)||_F^2 / ||G_l(s)||_F^2``
from noise. Gatys, Ecker & Bethge 2016, "Image Style Transfer Using Convolutional
Neural Networks": add a content loss ``||F_c(x) - F_c(p)||^2 / ||F_c(p)||^2`` at one layer
to keep the content image's layout. Adam on the pixels (the papers use L-BFGS); the
reported objective is the Gram (style) loss.

Style layers: the ``layers`` option (comma-separated), else up to five convolution
layers spread evenly from the first to ``layer`` (default: the last convolution).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InvalidArgument
from ..models import ExplainableModel
from ..models.capture import forward_capture
from ..options import Option
from .base import Job, JobMethod, JobRequest, check_image
from .common import (
    NOISE_OPTION,
    SIZE_OPTION,
    batch,
    lr_option,
    normalisation_of,
    output_size,
    steps_option,
)
from .layer_choice import spatial_layer
from .optimisation import ImageOptimisation
from .parameterisation import PixelImage, device_generator, noise_pixels
from .regularisers import gram_matrix, total_variation

MAX_STYLE_LAYERS = 5

LAYERS_OPTION = Option(
    "layers", "", "comma-separated style layers; empty: up to 5 convolutions up to `layer`"
)
TV_OPTION = Option("tv", 0.0, "weight of the TV prior", minimum=0.0, maximum=1e6)


class _GramMethod(JobMethod):
    """Shared checks: resolve the style layers into ``options["layers"]``."""

    family = "style"
    uses_layer = True

    def check(self, model: ExplainableModel, request: JobRequest) -> JobRequest:
        request.options["layers"] = ",".join(style_layers(model, request))
        return request


class TextureSynthesis(_GramMethod):
    """A new image with the exemplar's (``image``) Gram matrices, from noise."""

    id = "texture_synthesis"
    summary = "synthesise a texture matching the input image's Gram matrices, from noise"
    reference = "Gatys, Ecker & Bethge 2015, Texture Synthesis Using CNNs"
    needs_image = True
    options = (
        steps_option(200),
        lr_option(0.05),
        LAYERS_OPTION,
        SIZE_OPTION,
        NOISE_OPTION,
        TV_OPTION,
    )

    def check(self, model: ExplainableModel, request: JobRequest) -> JobRequest:
        output_size(model, request.options)
        return super().check(model, request)

    def create(self, model: ExplainableModel, request: JobRequest) -> Job:
        assert request.image is not None
        options = request.options
        normalisation = normalisation_of(request)
        layers = str(options["layers"]).split(",")
        targets = _grams(model, batch(request.image), layers)
        generator = device_generator(model.device, request.seed)
        size = (
            tuple(request.image.shape[-2:]) if options["size"] == 0 else output_size(model, options)
        )
        start = noise_pixels(
            (int(size[0]), int(size[1])), generator, model.device, float(options["noise_std"])
        )
        tv_weight = float(options["tv"])

        def loss(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            captured = forward_capture(
                model, normalisation.from_pixels(pixels), layers, logits=False
            )
            style = gram_loss(captured.layers, targets)
            return style + tv_weight * total_variation(pixels), style

        images = {"exemplar": request.image.detach()}
        return ImageOptimisation(model, request, PixelImage(start), loss, images=images)


class StyleTransfer(_GramMethod):
    """The content image (``image``) repainted with the style image's (``style``) Grams."""

    id = "style_transfer"
    summary = (
        "repaint the input image in the style image's Gram statistics, keeping its "
        "content at a layer"
    )
    reference = "Gatys, Ecker & Bethge 2016, Image Style Transfer Using CNNs"
    needs_image = True
    options = (
        steps_option(200),
        lr_option(0.02),
        LAYERS_OPTION,
        Option("content_layer", "", "layer of the content loss; empty: the model's default layer"),
        Option("style_weight", 1.0, "weight of the Gram loss", minimum=0.0, maximum=1e6),
        Option("content_weight", 1.0, "weight of the content loss", minimum=0.0, maximum=1e6),
        Option("init", "content", "start from the content or noise", choices=("content", "noise")),
        NOISE_OPTION,
        TV_OPTION,
    )

    def check(self, model: ExplainableModel, request: JobRequest) -> JobRequest:
        if request.style is None:
            raise InvalidArgument("style_transfer needs a style image; none was given")
        check_image(request.style, "style image")
        content = str(request.options["content_layer"]) or None
        request.options["content_layer"] = spatial_layer(model, content, "the content loss")
        return super().check(model, request)

    def create(self, model: ExplainableModel, request: JobRequest) -> Job:
        assert request.image is not None and request.style is not None
        options = request.options
        normalisation = normalisation_of(request)
        layers = str(options["layers"]).split(",")
        content_layer = str(options["content_layer"])
        targets = _grams(model, batch(request.style), layers)
        content = batch(request.image)
        with torch.no_grad():
            reference = forward_capture(model, content, [content_layer], logits=False)
        content_target = reference.layers[content_layer]
        content_scale = content_target.pow(2).sum().clamp(min=1e-12)
        if options["init"] == "content":
            start = normalisation.to_pixels(content)
        else:
            generator = device_generator(model.device, request.seed)
            size = (int(content.shape[-2]), int(content.shape[-1]))
            start = noise_pixels(size, generator, model.device, float(options["noise_std"]))
        weights = _weights(options)

        def loss(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            captured = forward_capture(
                model, normalisation.from_pixels(pixels), [*layers, content_layer], logits=False
            )
            style = gram_loss(captured.layers, targets)
            kept = (captured.layers[content_layer] - content_target).pow(2).sum() / content_scale
            total = weights["style"] * style + weights["content"] * kept
            return total + weights["tv"] * total_variation(pixels), style

        images = {"content": content[0], "style": request.style.detach()}
        return ImageOptimisation(model, request, PixelImage(start), loss, images=images)


def style_layers(model: ExplainableModel, request: JobRequest) -> list[str]:
    """The explicit ``layers`` option, checked, or the default spread of convolutions."""
    given = [name.strip() for name in str(request.options["layers"]).split(",") if name.strip()]
    if given:
        if len(given) > 16:
            raise InvalidArgument(f"at most 16 style layers, got {len(given)}")
        return [spatial_layer(model, name, "a style layer") for name in given]
    structure = model.structure
    convs = [name for name in structure.conv_layers if len(structure.layers[name].shape) == 4]
    if request.layer:
        deepest = structure.layers[spatial_layer(model, request.layer, "style")].order
        convs = [name for name in convs if structure.layers[name].order <= deepest]
    if not convs:
        raise InvalidArgument(
            "no convolution layer to take Gram matrices from; give the style layers in the "
            f"layers option, from: {', '.join(structure.spatial_layers())}"
        )
    if len(convs) <= MAX_STYLE_LAYERS:
        return convs
    last = len(convs) - 1
    picks = sorted({round(i * last / (MAX_STYLE_LAYERS - 1)) for i in range(MAX_STYLE_LAYERS)})
    return [convs[i] for i in picks]


def gram_loss(features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over layers of ``||G(x) - G(s)||_F^2 / ||G(s)||_F^2``."""
    total = next(iter(features.values())).new_zeros(())
    for name, target in targets.items():
        difference = gram_matrix(features[name]) - target
        total = total + difference.pow(2).sum() / target.pow(2).sum().clamp(min=1e-12)
    return total / len(targets)


def _grams(
    model: ExplainableModel, image: torch.Tensor, layers: list[str]
) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        captured = forward_capture(model, image, layers, logits=False)
    return {name: gram_matrix(captured.layers[name]) for name in layers}


def _weights(options: dict[str, Any]) -> dict[str, float]:
    return {
        "style": float(options["style_weight"]),
        "content": float(options["content_weight"]),
        "tv": float(options["tv"]),
    }
