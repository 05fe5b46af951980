"""Short reprs for the SDK's results, and the PNG bytes of the ones that are pictures.

A repr names the type and its fields, with arrays as dtype and shape and bytes as
their length, so printing a result (or a list of them) in a notebook stays readable.
"""

from __future__ import annotations

import io
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

MAX_ITEMS = 6  # list items shown before "... (n in all)"
MAX_TEXT = 60  # characters of a string shown before "..."


def brief(value: Any) -> str:
    """``value`` in a few characters: arrays as ``float32 (1, 64, 64)``, bytes by length."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {tuple(value.shape)}"
    if isinstance(value, bytes | bytearray | memoryview):
        kind = "PNG" if bytes(value[:4]) == b"\x89PNG" else "bytes"
        return f"<{kind}, {len(value)} bytes>"
    if isinstance(value, list | tuple):
        shown = ", ".join(brief(item) for item in value[:MAX_ITEMS])
        more = f", ... ({len(value)} in all)" if len(value) > MAX_ITEMS else ""
        return f"[{shown}{more}]" if isinstance(value, list) else f"({shown}{more})"
    if isinstance(value, dict):
        items = list(value.items())
        shown = ", ".join(f"{k!r}: {brief(v)}" for k, v in items[:MAX_ITEMS])
        more = f", ... ({len(items)} in all)" if len(items) > MAX_ITEMS else ""
        return f"{{{shown}{more}}}"
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return repr(value[:MAX_TEXT] + "...")
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value)


def dataclass_repr(record: DataclassInstance, *, skip: tuple[str, ...] = ()) -> str:
    """``Type(field=brief value, ...)`` over ``record``'s fields, less ``skip``."""
    parts = [
        f"{f.name}={brief(getattr(record, f.name))}"
        for f in fields(record)
        if f.repr and f.name not in skip
    ]
    return f"{type(record).__name__}({', '.join(parts)})"


def png_bytes(image: Any) -> bytes:
    """A PIL image as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def rgb_png(pixels: np.ndarray[Any, Any]) -> bytes:
    """A uint8 ``(H, W, 3)`` array as PNG bytes (imports Pillow)."""
    from PIL import Image

    return png_bytes(Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="RGB"))


__all__ = ["brief", "dataclass_repr", "png_bytes", "rgb_png"]
