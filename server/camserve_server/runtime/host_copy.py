"""Bring a batch's answers to the CPU in one transfer per dtype, not one per tensor.

Each ``.cpu()`` of a CUDA tensor is a synchronising device-to-host copy with a
fixed cost (tens of microseconds on bare metal, more under virtualisation), and
a batch of answers is many small tensors: heatmaps, logits, targets, flags and
metrics for every sample, and the cached activation of each. Measured on an
H200 (ResNet-50, Grad-CAM, batches of about 25), copying them one by one cost
more than the explanation itself. Here the tensors of one dtype are flattened
into one device buffer, copied once, and handed back as views of the host copy
(the activation cache copies a view before keeping it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def to_host(tensors: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Detached CPU versions of ``tensors`` (``None`` stays ``None``), same shapes and dtypes.

    Tensors already on the CPU are returned detached, without a copy.
    """
    out: list[torch.Tensor | None] = [None if t is None else t.detach() for t in tensors]
    by_dtype: dict[torch.dtype, list[int]] = {}
    for index, tensor in enumerate(out):
        if tensor is not None and tensor.device.type != "cpu":
            by_dtype.setdefault(tensor.dtype, []).append(index)
    for indices in by_dtype.values():
        parts = [out[i] for i in indices]
        flat = torch.cat([part.reshape(-1) for part in parts if part is not None]).cpu()
        offset = 0
        for i, part in zip(indices, parts, strict=True):
            assert part is not None
            out[i] = flat[offset : offset + part.numel()].view(part.shape)
            offset += part.numel()
    return out
