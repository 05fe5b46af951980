"""matplotlib, imported on first use: figures drawn off-screen (Agg) into PIL images.

Figures are ``matplotlib.figure.Figure`` objects, never pyplot's, so no global state
or display is involved and threads may draw at once.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

PLOTS_EXTRA_HINT = "install the plots extra: pip install 'camserve[plots]'"
DPI = 100


def has_matplotlib() -> bool:
    """Whether matplotlib is installed (without importing it)."""
    return importlib.util.find_spec("matplotlib") is not None


def require(what: str) -> None:
    """Raise ImportError naming ``what`` and the extra to install when matplotlib is absent."""
    if not has_matplotlib():
        raise ImportError(f"{what} needs matplotlib; {PLOTS_EXTRA_HINT}")


def new_figure(width: float, height: float, what: str = "this figure") -> Figure:
    """A figure ``width`` x ``height`` pixels (at 100 dpi) with constrained layout."""
    require(what)
    from matplotlib.figure import Figure

    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")


def to_image(figure: Figure) -> Image.Image:
    """The figure drawn, as an RGB PIL image of its pixel size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # type: ignore[no-untyped-call]
    pixels = np.asarray(canvas.buffer_rgba())[:, :, :3]  # type: ignore[no-untyped-call]
    return Image.fromarray(np.ascontiguousarray(pixels))


def listed_colormap(name: str, lut: np.ndarray[Any, Any]) -> Colormap:
    """A matplotlib colour map made of a (256, 3) uint8 table, so figures and overlays agree."""
    from matplotlib.colors import ListedColormap

    return ListedColormap(lut.astype(np.float64) / 255.0, name=name)


__all__ = [
    "DPI",
    "PLOTS_EXTRA_HINT",
    "has_matplotlib",
    "listed_colormap",
    "new_figure",
    "require",
    "to_image",
]
