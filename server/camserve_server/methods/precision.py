"""Which precision a method computes in, under the server's ``torch.autocast``.

The device worker runs a batch inside ``torch.autocast(device_type, dtype)``
when the server's ``precision`` is ``bfloat16`` or ``float16``
(Micikevicius et al. 2018, "Mixed Precision Training": matrix products and
convolutions in 16 bits, reductions and everything else in float32). A method
that declares ``mixed_precision = False`` runs with autocast switched off,
wholly in float32: docs/methods.md, "Precision", says which and why.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

# The relative tolerance of a float32 consistency check (e.g. CAM's logits check).
FLOAT32_RTOL = 1e-3


def reduced_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for ``device``'s type in this thread, or None (float32)."""
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def full_precision(device: torch.device) -> AbstractContextManager[object]:
    """Switch autocast off for ``device``'s type: everything inside runs in float32."""
    if reduced_dtype(device) is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def consistency_rtol(device: torch.device) -> float:
    """Relative tolerance for comparing two routes to one value computed under autocast.

    ``1e-3`` in float32; ``4 eps`` of the autocast dtype otherwise (bfloat16:
    ``4 * 2^-7 = 0.031``; float16: ``4 * 2^-10 = 0.0039``), since each route rounds
    its products to that dtype's 8 or 11 significant bits.
    """
    dtype = reduced_dtype(device)
    if dtype is None:
        return FLOAT32_RTOL
    return max(FLOAT32_RTOL, 4 * torch.finfo(dtype).eps)
