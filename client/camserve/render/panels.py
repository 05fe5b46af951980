"""An explanation as panels: per explained class, a picture at a readable size, a caption
(method, class, probability) and the colour scale that says what its colours mean.

How a map is shown follows what it is:

- a heatmap in [0, 1] (the CAM family, and any method sent without ``raw``): over
  the image in ``colormap``, 0 = no relevance, 1 = the map's maximum;
- a signed attribution (``raw`` of a gradient or perturbation method): Captum's
  view, a diverging map centred on 0 over the image in grey, scaled with outlier
  clipping (``attributions.signed_map``); an attribution with no negative value
  (saliency's ``|gradient|``) is shown in ``colormap`` from 0;
- guided backprop, deconvnet and guided Grad-CAM: the RGB gradient image
  (``attributions.gradient_image``), as pytorch-grad-cam shows them.

Signed and RGB pictures are at the model's input size (the raw's), over the image
resized to it (for a model that centre-crops, the whole image: the reply does not say
where the crop was); heatmaps are at the image's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from camserve.render.attributions import (
    DEFAULT_OUTLIER_PERC,
    gradient_image,
    sign_of,
    signed_map,
)
from camserve.render.colormaps import apply_colormap
from camserve.render.images import ImageLike, for_display, gray_rgb, overlay, reduced, to_pil

if TYPE_CHECKING:
    from camserve.results import Explanation

RGB_GRADIENT_METHODS: Final = frozenset({"guided_backprop", "deconvnet", "guided_gradcam"})
DIVERGING: Final = "bwr"
DISPLAY_SIDE: Final = 320  # pixels on a panel's longer side (at least; small images x whole)

View = Literal["heatmap", "signed", "magnitude", "gradient"]


@dataclass(frozen=True)
class ColourScale:
    """What a panel's colours mean: ``colormap`` from ``low`` to ``high`` with named
    ``ticks``, and a one-line ``label``; ``colormap`` None for an RGB picture, whose
    colours are its own (``label`` says how to read them)."""

    colormap: str | None
    low: float
    high: float
    ticks: tuple[tuple[float, str], ...]
    label: str


@dataclass(frozen=True)
class Panel:
    """One explained class: its picture (``native``: at most ``side`` pixels, never enlarged;
    ``picture``: at display size, see ``images.for_display``), caption and colour scale."""

    native: Image.Image
    caption: str
    scale: ColourScale
    method: str
    target: int
    side: int = DISPLAY_SIDE

    @property
    def picture(self) -> Image.Image:
        """The picture at display size: small ones enlarged by a whole factor (nearest)."""
        return for_display(self.native, self.side)


def heatmap_scale(colormap: str) -> ColourScale:
    """The scale of a [0, 1] heatmap."""
    return ColourScale(
        colormap,
        0.0,
        1.0,
        ((0.0, "0 none"), (0.5, "0.5"), (1.0, "1 most")),
        "relevance to the class (1 = the map's maximum)",
    )


def signed_scale(outlier_perc: float) -> ColourScale:
    """The scale of a signed attribution: blue against the class, red for it."""
    return ColourScale(
        DIVERGING,
        -1.0,
        1.0,
        ((-1.0, "-1 against"), (0.0, "0"), (1.0, "+1 for")),
        f"attribution (sum over RGB); the top {outlier_perc:g}% of its mass clipped to ±1",
    )


def magnitude_scale(colormap: str, outlier_perc: float) -> ColourScale:
    """The scale of a non-negative attribution (a gradient's magnitude)."""
    return ColourScale(
        colormap,
        0.0,
        1.0,
        ((0.0, "0"), (1.0, "1 most")),
        f"attribution (sum over RGB, none negative); the top {outlier_perc:g}% of its mass "
        "clipped to 1",
    )


GRADIENT_SCALE: Final = ColourScale(
    None,
    0.0,
    1.0,
    (),
    "RGB gradient: grey = 0; brighter or darker channels = positive or negative gradient",
)


def view_of(method: str, raw: npt.NDArray[np.float32] | None) -> View:
    """How ``method``'s map is shown, given the ``raw`` it came with (see the module)."""
    if raw is None or raw.ndim != 4 or raw.shape[1] != 3:
        return "heatmap"
    if method in RGB_GRADIENT_METHODS:
        return "gradient"
    return "magnitude" if sign_of(raw) == "absolute_value" else "signed"


def class_caption(explanation: Explanation, index: int) -> str:
    """``label · p = 0.93`` for the ``index``-th target; ``p ≤ x`` (the lowest listed) when
    the class is not among the top classes the server sent."""
    target = explanation.targets[index]
    label = explanation.labels[index] or str(target)
    scores = {s.index: s.probability for s in explanation.scores}
    if target in scores:
        return f"{label} · p = {_probability(scores[target])}"
    if scores:
        return f"{label} · p ≤ {min(scores.values()):.2g}"
    return label


def _probability(p: float) -> str:
    """Two decimals, or one significant digit below 0.01 (``3e-05``, not ``0.00``)."""
    return f"{p:.2f}" if p >= 0.01 or p == 0.0 else f"{p:.1g}"


def caption(explanation: Explanation, index: int) -> str:
    """``method · label · p = 0.93``, and a note when the map is empty."""
    text = f"{explanation.method} · {class_caption(explanation, index)}"
    if explanation.empty[index]:
        text += " (empty: nothing positive)"
    return text


def _at_input(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    height, width = size
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BILINEAR)


def _blend(base: Image.Image, colours: npt.NDArray[np.uint8], alpha: float) -> Image.Image:
    pixels = np.asarray(base, dtype=np.float32)
    blend = (1.0 - alpha) * pixels + alpha * colours.astype(np.float32)
    return Image.fromarray(np.clip(np.rint(blend), 0, 255).astype(np.uint8))


def map_picture(
    image: Image.Image,
    explanation: Explanation,
    index: int,
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
    outlier_perc: float = DEFAULT_OUTLIER_PERC,
) -> tuple[Image.Image, ColourScale]:
    """The ``index``-th map drawn (at its own size) and its scale, by ``view_of``."""
    raw = explanation.raw
    view = view_of(explanation.method, raw)
    if view == "heatmap" or raw is None:
        return overlay(image, explanation.heatmaps[index], colormap, alpha), heatmap_scale(colormap)
    attribution = raw[index]
    size = (attribution.shape[1], attribution.shape[2])
    if view == "gradient":
        return Image.fromarray(gradient_image(attribution)), GRADIENT_SCALE
    if view == "magnitude":
        values = signed_map(attribution, outlier_perc, "absolute_value")
        return overlay(_at_input(image, size), values, colormap, alpha), magnitude_scale(
            colormap, outlier_perc
        )
    values = signed_map(attribution, outlier_perc)
    colours = apply_colormap((values + 1.0) / 2.0, DIVERGING)
    return _blend(gray_rgb(_at_input(image, size)), colours, alpha), signed_scale(outlier_perc)


def explanation_panels(
    image: ImageLike,
    explanation: Explanation,
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
    outlier_perc: float = DEFAULT_OUTLIER_PERC,
    side: int = DISPLAY_SIDE,
) -> list[Panel]:
    """One panel per explained class of ``explanation`` of ``image``, ``side`` pixels on
    the longer edge (see ``images.for_display``)."""
    base = to_pil(image)
    panels = []
    for index, target in enumerate(explanation.targets):
        picture, scale = map_picture(
            base, explanation, index, colormap=colormap, alpha=alpha, outlier_perc=outlier_perc
        )
        native = reduced(picture, side)
        panels.append(
            Panel(native, caption(explanation, index), scale, explanation.method, target, side)
        )
    return panels


__all__ = [
    "DISPLAY_SIDE",
    "DIVERGING",
    "GRADIENT_SCALE",
    "RGB_GRADIENT_METHODS",
    "ColourScale",
    "Panel",
    "View",
    "caption",
    "class_caption",
    "explanation_panels",
    "heatmap_scale",
    "magnitude_scale",
    "map_picture",
    "signed_scale",
    "view_of",
]
