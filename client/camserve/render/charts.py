"""A bar chart of per-channel activation, its strongest channels named by their numbers
(matplotlib, the ``plots`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
from PIL import Image

from camserve.render import _mpl

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BAR: Final = "#7896be"
TOP_BAR: Final = "#d62728"


def channel_profile_figure(
    values: npt.ArrayLike,
    *,
    channels: Sequence[int] | None = None,
    top: int = 5,
    width: int = 800,
    height: int = 300,
    title: str | None = None,
    ylabel: str = "mean activation",
) -> Figure:
    """A bar per channel at its channel number (``channels``, default 0..K-1) of, say,
    mean activation; the ``top`` highest red and labelled with their channel numbers.

    Non-finite values count as 0.
    """
    data = np.nan_to_num(np.asarray(values, dtype=np.float64).ravel(), nan=0.0)
    if data.size == 0:
        raise ValueError("no values to chart")
    numbers = np.arange(data.size) if channels is None else np.asarray(channels, dtype=np.int64)
    if numbers.shape != data.shape:
        raise ValueError(f"{numbers.size} channel numbers for {data.size} values")
    if width < 160 or height < 120:
        raise ValueError(f"the chart needs at least 160x120 pixels, got {width}x{height}")
    top = max(0, min(top, data.size))
    strongest = np.argsort(-data, kind="stable")[:top]
    highlighted = np.zeros(data.size, dtype=bool)
    highlighted[strongest] = True

    figure = _mpl.new_figure(width, height, "the channel profile chart")
    ax = figure.subplots()
    bar_width = 0.8 if data.size < 2 else 0.8 * float(np.min(np.diff(np.sort(numbers))))
    ax.bar(numbers[~highlighted], data[~highlighted], width=bar_width, color=BAR,
           label="channel")  # fmt: skip
    if top:
        ax.bar(numbers[highlighted], data[highlighted], width=bar_width, color=TOP_BAR,
               label=f"the {top} strongest (numbered)")  # fmt: skip
        for k in strongest.tolist():
            ax.annotate(
                str(int(numbers[k])),
                (float(numbers[k]), float(data[k])),
                xytext=(0, 2 if data[k] >= 0 else -2),
                textcoords="offset points",
                ha="center",
                va="bottom" if data[k] >= 0 else "top",
                fontsize=8,
            )
    ax.axhline(0.0, color="#555555", linewidth=0.8)
    ax.set_xlabel(f"channel ({int(numbers.min())}-{int(numbers.max())})")
    ax.set_ylabel(ylabel)
    ax.set_xlim(float(numbers.min()) - bar_width, float(numbers.max()) + bar_width)
    ax.margins(y=0.12)
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=11)
    return figure


def channel_profile_chart(
    values: npt.ArrayLike,
    *,
    channels: Sequence[int] | None = None,
    top: int = 5,
    width: int = 800,
    height: int = 300,
    title: str | None = None,
) -> Image.Image:
    """``channel_profile_figure`` drawn as a ``width`` x ``height`` RGB image."""
    figure = channel_profile_figure(
        values, channels=channels, top=top, width=width, height=height, title=title
    )
    return _mpl.to_image(figure)


__all__ = ["BAR", "TOP_BAR", "channel_profile_chart", "channel_profile_figure"]
