"""Images in, heatmaps out: decode what callers send, preprocess it, and put heatmaps back
onto the picture they sent (METHODS.md, "Images in, heatmaps out").

Decoding lives in ``decode`` (bytes to an upright RGB picture), preprocessing and
heatmap placement in ``preprocess``; this module gathers both.
"""

from __future__ import annotations

from .decode import (
    ACCEPTED_FORMATS,
    ACCEPTED_NAMES,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    decode_image,
    image_size,
    to_rgb,
)
from .preprocess import (
    HEATMAP_DTYPES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERPOLATIONS,
    MAX_SIDE,
    MIN_SIDE,
    RESIZE_MODES,
    HeatmapDtype,
    Interpolation,
    Placement,
    Preprocess,
    ResizeMode,
    convert_heatmap,
    place_heatmap,
    validate_tensor,
)

__all__ = [
    "ACCEPTED_FORMATS",
    "ACCEPTED_NAMES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "HEATMAP_DTYPES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTERPOLATIONS",
    "MAX_SIDE",
    "MIN_SIDE",
    "RESIZE_MODES",
    "HeatmapDtype",
    "Interpolation",
    "Placement",
    "Preprocess",
    "ResizeMode",
    "convert_heatmap",
    "decode_image",
    "image_size",
    "place_heatmap",
    "to_rgb",
    "validate_tensor",
]
