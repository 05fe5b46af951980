"""Picture to model input, and heatmaps back onto the picture (METHODS.md, "Images in,
heatmaps out").

Resizing is ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
antialias=True)`` on the float tensor in [0, 1] (no rounding back to uint8), the
same as ``torchvision.transforms.v2.functional.resize`` on a float tensor. With
``interpolation="bicubic"`` (models trained with it: many timm models, some
torchvision weights) the resize is Pillow's: ``bicubic`` (antialiased, a = -0.5)
in two passes, width then height, each clamped to the pixel range as Pillow
clamps it (within about one grey level of ``Image.resize(..., BICUBIC)``).
``resize_crop`` follows torchvision's ImageNet evaluation: the shorter side to
``resize_size`` (the longer side truncated, as ``Resize`` does), then a centre crop
placed as ``CenterCrop`` places it. Where the crop would be larger than the resized
picture (a non-square input size, or a ``resize_size`` below the input size), the
picture is scaled up until the crop fits instead of being padded with black.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InvalidArgument

IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)
RESIZE_MODES: Final = ("resize", "resize_crop")
INTERPOLATIONS: Final = ("bilinear", "bicubic")
HEATMAP_DTYPES: Final = ("float32", "float16", "uint8")
MIN_SIDE, MAX_SIDE = 8, 4096  # the accepted height and width of a tensor input
CROP_RATIO: Final = 0.875  # the default resize_size is round(min(input_size) / CROP_RATIO)

ResizeMode = Literal["resize", "resize_crop"]
Interpolation = Literal["bilinear", "bicubic"]
HeatmapDtype = Literal["float32", "float16", "uint8"]
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Placement:
    """Where the model's input came from in the original (decoded, upright) picture.

    ``original_size`` is its (height, width); ``crop`` the (top, left, height, width)
    region the model saw, in original pixels, or None when it saw the whole picture.
    """

    original_size: tuple[int, int]
    crop: Box | None = None

    @property
    def box(self) -> Box:
        """The region the model saw, the whole picture when there was no crop."""
        if self.crop is not None:
            return self.crop
        height, width = self.original_size
        return (0.0, 0.0, float(height), float(width))


@dataclass(frozen=True)
class Preprocess:
    """A model's preprocessing: resize (or resize + centre crop), then normalise."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_mode: str = "resize"  # a ResizeMode
    resize_size: int | None = None  # the shorter side before the crop ("resize_crop" only)
    interpolation: str = "bilinear"  # an Interpolation

    def __post_init__(self) -> None:
        height, width = (int(side) for side in self.input_size)
        if height < 1 or width < 1:
            raise ValueError(f"input_size must be positive, got {self.input_size}")
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std must have three values, one per channel")
        if not all(math.isfinite(v) for v in mean) or not all(
            math.isfinite(v) and v != 0.0 for v in std
        ):
            raise ValueError("mean must be finite and std finite and non-zero")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(
                f"resize_mode must be 'resize' or 'resize_crop', got {self.resize_mode!r}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be 'bilinear' or 'bicubic', got {self.interpolation!r}"
            )
        if self.resize_size is not None and self.resize_size < 1:
            raise ValueError(f"resize_size must be positive, got {self.resize_size}")
        object.__setattr__(self, "input_size", (height, width))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def shorter_side(self) -> int:
        """The length the shorter side is resized to before a centre crop."""
        return self.resize_size or round(min(self.input_size) / CROP_RATIO)

    @functools.cached_property
    def _digest(self) -> str:
        crop = self.resize_mode == "resize_crop"
        settings = {
            "version": 1,
            "interpolation": "bilinear-antialias-float",
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "resize_mode": self.resize_mode,
            "resize_size": self.shorter_side if crop else None,
        }
        if self.interpolation != "bilinear":  # the default leaves every existing key as it was
            settings["interpolation"] = f"{self.interpolation}-antialias-float-clamped"
        text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def digest(self) -> str:
        """A short stable hash of what these settings compute, part of every cache key."""
        return self._digest

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) a picture of this size is resized to, before any crop."""
        out_h, out_w = self.input_size
        if self.resize_mode == "resize":
            return out_h, out_w
        side = self.shorter_side
        if width <= height:  # torchvision's Resize(int): the longer side truncated
            new_h, new_w = int(side * height / width), side
        else:
            new_h, new_w = side, int(side * width / height)
        if new_h >= out_h and new_w >= out_w:
            return new_h, new_w
        scale = max(out_h / height, out_w / width)  # scale up so that the crop fits
        return max(out_h, round(height * scale)), max(out_w, round(width * scale))

    def placement(self, size: tuple[int, int]) -> Placement:
        """Where the model's input sits in an upright picture of ``size`` (height, width)."""
        height, width = size
        if self.resize_mode == "resize":
            return Placement(original_size=(height, width))
        new_h, new_w = self.resized_shape(height, width)
        top, left = self._crop_anchor(new_h, new_w)
        out_h, out_w = self.input_size
        sy, sx = height / new_h, width / new_w
        return Placement(
            original_size=(height, width), crop=(top * sy, left * sx, out_h * sy, out_w * sx)
        )

    def _crop_anchor(self, new_h: int, new_w: int) -> tuple[int, int]:
        out_h, out_w = self.input_size  # torchvision's CenterCrop anchor
        return round((new_h - out_h) / 2.0), round((new_w - out_w) / 2.0)

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, Placement]:
        """The normalised float32 tensor ``(3, H, W)`` and where it sits in ``image``."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        width, height = rgb.size
        pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)
        new_h, new_w = self.resized_shape(height, width)
        out_h, out_w = self.input_size
        top, left = self._crop_anchor(new_h, new_w)
        if (new_h, new_w) == (height, width):  # no resize: crop the bytes
            crop = pixels[:, top : top + out_h, left : left + out_w]
            x = torch.empty(crop.shape, dtype=torch.float32).copy_(crop)
        else:  # the resize is linear (weights sum to 1): it commutes with the affine
            resized = self._resize(pixels.unsqueeze(0).to(torch.float32), new_h, new_w)
            x = resized[0, :, top : top + out_h, left : left + out_w].contiguous()
        scale, shift = self._affine
        return x.mul_(scale).sub_(shift), self.placement((height, width))

    def _resize(self, pixels: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
        """``pixels`` (1, 3, h, w) in [0, 255] resized to (new_h, new_w)."""
        if self.interpolation == "bilinear":
            return F.interpolate(
                pixels, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
            )
        for size in ((pixels.shape[2], new_w), (new_h, new_w)):  # Pillow's passes and clamps
            if tuple(pixels.shape[2:]) == size:
                continue
            pixels = F.interpolate(
                pixels, size=size, mode="bicubic", align_corners=False, antialias=True
            ).clamp_(0.0, 255.0)
        return pixels

    @functools.cached_property
    def _affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)`` with ``(p / 255 - mean) / std = p * scale - shift`` per channel."""
        mean = torch.tensor(self.mean, dtype=torch.float64).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float64).view(3, 1, 1)
        return (1.0 / (255.0 * std)).float(), (mean / std).float()


def place_heatmap(
    heatmap: torch.Tensor, placement: Placement, out_size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Resize heatmaps ``(T, h, w)`` in [0, 1] onto the original picture: float32 ``(T, H, W)``.

    Bilinear, ``align_corners=False``. With a crop the map fills the crop's region
    and is zero outside it (a pixel counts as inside when its centre is). ``out_size``
    (height, width) rescales the whole picture, crop included; by default the
    original size, so the map overlays the picture the caller sent.
    """
    if heatmap.ndim != 3:
        raise ValueError(f"heatmaps must have shape (T, h, w), got {tuple(heatmap.shape)}")
    height, width = placement.original_size
    out_h, out_w = out_size if out_size is not None else (height, width)
    if out_h < 1 or out_w < 1:
        raise InvalidArgument(f"output size must be positive, got {out_h}x{out_w}")
    maps = heatmap.detach().to(torch.float32).clamp(0.0, 1.0)
    count, h, w = maps.shape
    if count == 0 or h == 0 or w == 0:
        return maps.new_zeros((count, out_h, out_w))
    if placement.crop is None or placement.box == (0.0, 0.0, float(height), float(width)):
        if (h, w) == (out_h, out_w):
            return maps  # already a new tensor: clamp copied it
        resized = F.interpolate(
            maps[:, None], size=(out_h, out_w), mode="bilinear", align_corners=False
        )
        return resized[:, 0].clamp_(0.0, 1.0)
    top, left, box_h, box_w = placement.box
    rows = _axis(out_h, height, top, box_h, h)
    cols = _axis(out_w, width, left, box_w, w)
    placed = maps.new_zeros((count, out_h, out_w))
    if rows is None or cols is None:
        return placed  # the crop covers no output pixel's centre
    (r0, r1, y0, y1, fy), (c0, c1, x0, x1, fx) = rows, cols
    device = maps.device
    # Columns first, on the small map; then whole rows, which gather contiguously.
    wide = torch.lerp(
        maps.index_select(2, x0.to(device)), maps.index_select(2, x1.to(device)), fx.to(device)
    )
    placed[:, r0:r1, c0:c1] = torch.lerp(
        wide.index_select(1, y0.to(device)),
        wide.index_select(1, y1.to(device)),
        fy.to(device).view(1, -1, 1),
    )
    return placed.clamp_(0.0, 1.0)


def _axis(
    n_out: int, n_original: int, start: float, length: float, n_map: int
) -> tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """One axis of a bilinear resize of ``n_map`` values into ``[start, start + length)``.

    The output pixels whose centre is inside, ``[first, stop)``, and for each the two
    map indices and the weight of the second; None when no centre is inside. Indices
    are clamped at the edges and negative source positions to 0, exactly as
    ``interpolate(align_corners=False)`` does.
    """
    centres = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_original / n_out)
    inside = ((centres >= start) & (centres < start + length)).nonzero().flatten()
    if inside.numel() == 0:
        return None
    first, stop = int(inside[0]), int(inside[-1]) + 1
    source = ((centres[first:stop] - start) * (n_map / length) - 0.5).clamp(min=0.0)
    lower = source.floor().to(torch.long).clamp(max=n_map - 1)
    upper = (lower + 1).clamp(max=n_map - 1)
    weight = (source - lower).clamp(0.0, 1.0).to(torch.float32)
    return first, stop, lower, upper, weight


def validate_tensor(array: npt.NDArray[Any]) -> torch.Tensor:
    """A caller's preprocessed input: float32 ``(3, H, W)`` or ``(1, 3, H, W)``, finite,
    each side in [MIN_SIDE, MAX_SIDE]. Returns a float32 ``(3, H, W)`` copy."""
    if not isinstance(array, np.ndarray):
        raise InvalidArgument(f"tensor input must be an array, got {type(array).__name__}")
    if array.dtype.kind != "f" or array.dtype.itemsize != 4:
        raise InvalidArgument(f"tensor input must be float32, got {array.dtype}")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != 3:
        raise InvalidArgument(
            f"tensor input must have shape (3, H, W) or (1, 3, H, W), got {tuple(array.shape)}"
        )
    height, width = int(array.shape[1]), int(array.shape[2])
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
        raise InvalidArgument(
            f"tensor input height and width must be in [{MIN_SIDE}, {MAX_SIDE}], "
            f"got {height}x{width}"
        )
    if not np.isfinite(array).all():
        raise InvalidArgument("tensor input contains NaN or infinite values")
    return torch.from_numpy(np.array(array, dtype=np.float32, copy=True))


def convert_heatmap(heatmap: torch.Tensor, dtype: str) -> npt.NDArray[Any]:
    """A heatmap in [0, 1] as a ``HeatmapDtype`` array: float32, float16, or uint8
    (``round(255 * h)``). NaN becomes 0; values are clamped to [0, 1] first."""
    values = torch.nan_to_num(heatmap.detach().float(), nan=0.0).clamp_(0.0, 1.0).cpu().numpy()
    if dtype == "float32":
        return values  # nan_to_num made a new float32 array: nothing to copy
    if dtype == "float16":
        return values.astype(np.float16)
    if dtype == "uint8":
        return np.rint(values * 255.0).astype(np.uint8)
    raise InvalidArgument(
        f"heatmap dtype must be one of {', '.join(HEATMAP_DTYPES)}, got {dtype!r}"
    )


__all__ = [
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
    "place_heatmap",
    "validate_tensor",
]
