"""The server's ``precision`` setting: which ``torch.autocast`` dtype explanation passes use.

``float32`` (the default) runs without autocast. ``bfloat16`` and ``float16`` run
every explanation batch inside ``torch.autocast(device_type, dtype)``
(Micikevicius et al. 2018): convolutions and matrix products in 16 bits, the
rest in float32. ``float16`` is refused on a CPU device: CPU autocast computes
in bfloat16 only. Results leave the engine as float32 whatever the precision.

On CUDA, float32 means float32: torch runs CUDA convolutions in TF32 by default
(a 10-bit mantissa), which made a sample's saliency map change by up to 0.12
with the batch it ran in on an H200. A server with a CUDA device turns TF32 off
(``exact_float32_on_cuda``); the speed of 16-bit arithmetic is what ``float16``
is for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextlib import AbstractContextManager

import torch

from ..errors import InvalidArgument

PRECISIONS: dict[str, torch.dtype | None] = {
    "float32": None,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def precision_name(precision: str) -> str:
    """``precision`` in its canonical spelling (``bfloat16``), or ``InvalidArgument``."""
    name = str(precision).strip().lower()
    if name not in PRECISIONS:
        raise InvalidArgument(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    return name


def autocast_dtype(precision: str, devices: Sequence[torch.device] = ()) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (None: float32), checked against ``devices``."""
    dtype = PRECISIONS[precision_name(precision)]
    cpus = [str(device) for device in devices if device.type != "cuda"]
    if dtype == torch.float16 and cpus:
        raise InvalidArgument(
            f"precision float16 needs CUDA devices, but the server runs on {', '.join(cpus)}; "
            "use precision bfloat16 (CPU and CUDA) or float32"
        )
    return dtype


def mixed_precision(
    device: torch.device, dtype: torch.dtype | None
) -> AbstractContextManager[object]:
    """``torch.autocast`` on ``device``'s type with ``dtype``; nothing for float32 (None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def exact_float32_on_cuda() -> None:
    """TF32 off for CUDA convolutions and matrix products, in this whole process."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
