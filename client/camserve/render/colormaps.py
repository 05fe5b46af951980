"""Colour maps as 256-entry lookup tables, and ``apply_colormap``.

The base install has no matplotlib, so a few maps are built in: ``jet``, ``gray``
and the diverging ``bwr`` (blue, white, red) are computed as matplotlib computes
them (piecewise-linear segments sampled at 256 points, scaled to bytes by
truncation), so they agree with ``matplotlib.colormaps[name](x, bytes=True)``
(``jet`` and ``gray`` exactly, ``bwr`` within one unit); ``viridis``, ``inferno``
and ``turbo`` are rebuilt from every fifth entry of matplotlib's tables, linearly
interpolated: within 2 units of the originals.
With matplotlib installed (the ``plots`` extra) any of its maps may be named too.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from typing import Final

import numpy as np
import numpy.typing as npt

LUT_SIZE: Final = 256

# matplotlib's jet: per channel, (position, value) breakpoints joined linearly.
_JET_SEGMENTS: Final[tuple[tuple[tuple[float, float], ...], ...]] = (
    ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
)

# matplotlib's bwr: blue at -1, white at 0, red at +1 (a signed map centred on zero).
_BWR_SEGMENTS: Final[tuple[tuple[tuple[float, float], ...], ...]] = (
    ((0.0, 0.0), (0.5, 1.0), (1.0, 1.0)),
    ((0.0, 0.0), (0.5, 1.0), (1.0, 0.0)),
    ((0.0, 1.0), (0.5, 1.0), (1.0, 0.0)),
)

# Entries 0, 5, 10, ..., 255 of matplotlib's listed maps, as RGB hex triplets.
_CONTROL_STEP: Final = 5
_LISTED: Final[dict[str, str]] = {
    "viridis": (
        "44015446085c471063481769481d6f482475472a7a46307e453781433d844142873f48893d4e8a3a538b3859"
        "8c355e8d33638d31688e2e6d8e2c718e2a768e297b8e27808e25848e23898e218e8d20928c1f978b1e9c891f"
        "a18821a58524aa8328ae802eb37c35b7793dbc7446c06f50c46a5ac86465cb5e70cf577cd25089d54895d840"
        "a2da37b0dd2fbddf26cae11fd8e219e5e419f1e51dfde725"
    ),
    "inferno": (
        "00000402020c0504170a072210092d160b391e0c45260c512f0a5b380962400a67490b6a510e6c59106e6113"
        "6e69166e71196e781c6d801f6c88226a902568982766a02a63a82e5fb0315bb73557bf3952c63d4dcc4248d3"
        "4743d94d3ddf5337e45a31e9612bed6925f1711ff47918f78212f98b0bfa9407fb9d07fca60cfcb014fbba1f"
        "fac42af8cd37f6d746f4e156f2ea69f2f27df5f992fcffa4"
    ),
    "turbo": (
        "30123b36215f3b2f803f3e9c424bb54559cb4666dd4773eb4680f6458cfd4099ff38a5fb2fb2f427bee91fc9"
        "dd1ad4d018ddc21ae4b622ebaa2ff19b3ff68a52fa7a65fd6979fe598bff4b9cfe40a9fb39b7f735c3f134d0"
        "ea34dbe236e5d938eecf3af5c53afaba39fdae35fea130fe932afc8423f9751df46617ef5811e84b0ce14109"
        "d83706ce2d04c32503b71d02a916019b0f018b09027a0403"
    ),
}


def _to_bytes(lut: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    """Float [0, 1] table to bytes, truncating as matplotlib does."""
    table = (np.clip(lut, 0.0, 1.0) * 255).astype(np.uint8)
    table.setflags(write=False)
    return table


def _segmented(segments: tuple[tuple[tuple[float, float], ...], ...]) -> npt.NDArray[np.uint8]:
    positions = np.linspace(0.0, 1.0, LUT_SIZE)
    channels = [
        np.interp(positions, [p for p, _ in points], [v for _, v in points]) for points in segments
    ]
    return _to_bytes(np.stack(channels, axis=1))


def _listed(hex_triplets: str) -> npt.NDArray[np.uint8]:
    control = np.frombuffer(bytes.fromhex(hex_triplets), dtype=np.uint8).reshape(-1, 3)
    at = np.arange(control.shape[0]) * _CONTROL_STEP
    entries = np.arange(LUT_SIZE)
    channels = [np.interp(entries, at, control[:, c].astype(np.float64)) for c in range(3)]
    table = np.rint(np.stack(channels, axis=1)).astype(np.uint8)
    table.setflags(write=False)
    return table


def _gray() -> npt.NDArray[np.uint8]:
    ramp = np.linspace(0.0, 1.0, LUT_SIZE)
    return _to_bytes(np.stack([ramp, ramp, ramp], axis=1))


COLORMAPS: Final[Mapping[str, npt.NDArray[np.uint8]]] = {
    "jet": _segmented(_JET_SEGMENTS),
    "viridis": _listed(_LISTED["viridis"]),
    "inferno": _listed(_LISTED["inferno"]),
    "turbo": _listed(_LISTED["turbo"]),
    "gray": _gray(),
    "bwr": _segmented(_BWR_SEGMENTS),
}
COLORMAP_NAMES: Final[tuple[str, ...]] = tuple(COLORMAPS)
"""The built-in maps; with matplotlib installed, any of its maps is accepted too."""


@functools.lru_cache(maxsize=32)
def _matplotlib_lut(name: str) -> npt.NDArray[np.uint8] | None:
    try:
        colormaps = importlib.import_module("matplotlib").colormaps
    except ImportError:
        return None
    if name not in colormaps:
        return None
    table = np.asarray(colormaps[name](np.linspace(0.0, 1.0, LUT_SIZE), bytes=True))[:, :3]
    table = np.ascontiguousarray(table, dtype=np.uint8)
    table.setflags(write=False)
    return table


def colormap_lut(name: str) -> npt.NDArray[np.uint8]:
    """The read-only (256, 3) uint8 table of colour map ``name``: a built-in one, else
    matplotlib's of that name where matplotlib is installed."""
    lut = COLORMAPS.get(name.lower())
    if lut is None:
        lut = _matplotlib_lut(name)
    if lut is None:
        raise ValueError(
            f"unknown colormap {name!r}; valid: {', '.join(COLORMAP_NAMES)}"
            " (or any matplotlib colormap, with the plots extra)"
        )
    return lut


def is_colormap(name: str) -> bool:
    """Whether ``colormap_lut(name)`` knows ``name``."""
    return name.lower() in COLORMAPS or _matplotlib_lut(name) is not None


def apply_colormap(heatmap: npt.ArrayLike, name: str = "jet") -> npt.NDArray[np.uint8]:
    """Colour a 2-D map of values in [0, 1] as a (h, w, 3) uint8 array.

    Values are clipped to [0, 1]; NaN counts as 0. Value ``v`` takes entry
    ``floor(v * 256)`` (1.0 takes the last), as matplotlib does.
    """
    lut = colormap_lut(name)
    values = np.asarray(heatmap, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (h, w), got shape {values.shape}")
    values = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)
    index = np.clip(np.floor(values * LUT_SIZE), 0, LUT_SIZE - 1).astype(np.intp)
    result: npt.NDArray[np.uint8] = lut[index]
    return result
