"""The receptive field of a layer's units, measured on the model rather than guessed.

A unit ``(i, j)`` of a convolutional layer sees the input region centred on
``offset + (i, j) * stride`` of extent ``size`` (Araujo et al. 2019, "Computing
receptive fields of convolutional neural networks"). Instead of walking the graph
with per-module kernel/stride/padding arithmetic (which breaks on branches, dilation
and custom modules), it is read off the gradient: the support of ``d A[:, i, j] / d x``
is the set of input pixels that can change the unit. The support is taken as the
union over a few random inputs (a ReLU that is off for one input, or a max-pool that
routes elsewhere, is on for another), for two neighbouring units, which gives the
size (extent of one), the stride (shift between the two) and the offset.

The forward stops at the layer (nothing after it runs), so the probe may be larger
than the model's input: it grows until the centre unit's support stays clear of the
border, as a field larger than the image would otherwise be measured clipped.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import FailedPrecondition, InvalidArgument
from ..models import ExplainableModel

SAMPLES = 3  # random inputs whose gradient supports are united
MAX_PROBE_SIDE = 1024


@dataclass(frozen=True)
class ReceptiveField:
    """Where a unit of a layer looks, in input pixels; pairs are ``(height, width)`` order.

    The unit ``(row, col)`` is centred at ``(offset[0] + row * stride[0], offset[1] +
    col * stride[1])`` (pixel centres at integer coordinates) and spans ``size`` pixels.
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[float, float]
    input_hw: tuple[int, int] = (0, 0)  # the model input the field was measured for

    def centre(self, row: int, col: int) -> tuple[float, float]:
        """The ``(y, x)`` input coordinate at the centre of unit ``(row, col)``."""
        return (self.offset[0] + row * self.stride[0], self.offset[1] + col * self.stride[1])

    def box(self, row: int, col: int, image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
        """The unit's field as ``(x0, y0, x1, y1)`` (ends exclusive), clipped to ``image_hw``.

        For a field of odd size ``s`` centred on pixel ``c`` the span is ``c - s//2 .. c + s//2``.
        """
        cy, cx = self.centre(row, col)
        y0 = round(cy - (self.size[0] - 1) / 2)
        x0 = round(cx - (self.size[1] - 1) / 2)
        height, width = image_hw
        return (
            max(0, min(width, x0)),
            max(0, min(height, y0)),
            max(0, min(width, x0 + self.size[1])),
            max(0, min(height, y0 + self.size[0])),
        )


class _StopForward(Exception):
    """Raised by the probe hook once the layer has run: nothing after it is needed."""


_cache: weakref.WeakKeyDictionary[ExplainableModel, dict[str, ReceptiveField]] = (
    weakref.WeakKeyDictionary()
)
_by_name: dict[tuple[str, str], ReceptiveField] = {}
_lock = threading.Lock()


def receptive_field(model: ExplainableModel, layer: str) -> ReceptiveField:
    """The receptive field of ``layer``'s units, measured once per (model, layer) and cached."""
    layer = model.resolve_layer(layer)
    with _lock:
        found = _cache.get(model, {}).get(layer)
    if found is not None:
        return found
    field = measure_receptive_field(model.module, model.submodule(layer), model.input_size)
    with _lock:
        _cache.setdefault(model, {})[layer] = field
        _by_name[(model.name, layer)] = field
    return field


def cached_receptive_field(model_name: str, layer: str) -> ReceptiveField:
    """The field last measured for the model of that name; ``FailedPrecondition`` if none was."""
    with _lock:
        found = _by_name.get((model_name, layer))
    if found is None:
        raise FailedPrecondition(
            f"the receptive field of layer {layer!r} of model {model_name!r} has not been "
            "measured in this process; call receptive_field(model, layer) first"
        )
    return found


def measure_receptive_field(
    module: nn.Module, layer: nn.Module, input_hw: tuple[int, int], *, seed: int = 0
) -> ReceptiveField:
    """Measure the field of ``layer`` (a submodule of ``module``) from gradient supports."""
    height, width = input_hw
    scale = 1
    while True:
        probe_hw = (height * scale, width * scale)
        supports, map_hw = _supports(module, layer, probe_hw, seed)
        centre_box = supports[0]
        clear = (
            centre_box[0] > 0
            and centre_box[1] > 0
            and centre_box[2] < probe_hw[0] - 1
            and centre_box[3] < probe_hw[1] - 1
        )
        if clear or max(probe_hw) * 2 > MAX_PROBE_SIDE:
            break
        scale *= 2
    return _field_from(supports, map_hw, probe_hw, input_hw)


def _units(map_hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The centre unit and its lower-right neighbour (the same unit on a 1-wide axis)."""
    r, c = map_hw[0] // 2, map_hw[1] // 2
    return (r, c), (min(r + 1, map_hw[0] - 1), min(c + 1, map_hw[1] - 1))


def _supports(
    module: nn.Module, layer: nn.Module, probe_hw: tuple[int, int], seed: int
) -> tuple[list[tuple[int, int, int, int]], tuple[int, int]]:
    """Bounding boxes ``(y0, x0, y1, x1)`` (inclusive) of the gradient support of two units."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * SAMPLES, 3, *probe_hw, generator=generator).to(device)
    x.requires_grad_(True)
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, _args: tuple[object, ...], out: object) -> None:
        if not isinstance(out, torch.Tensor):
            raise InvalidArgument("the layer does not return a tensor")
        captured.append(out)
        raise _StopForward

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            with contextlib.suppress(_StopForward):
                module(x)
            if not captured:
                raise InvalidArgument("the layer did not run in the model's forward pass")
            out = captured[0]
            if out.dim() == 2:
                out = out[:, :, None, None]
            if out.dim() != 4:
                raise InvalidArgument(f"the layer outputs {tuple(out.shape)}, not (N, C, h, w)")
            map_hw = (int(out.shape[2]), int(out.shape[3]))
            units = _units(map_hw)
            # Item s looks at the first unit, item SAMPLES + s at the second: in eval mode
            # the items of a batch do not interact, so each gradient is its own unit's.
            chosen = [out[i, :, *units[i // SAMPLES]].sum() for i in range(2 * SAMPLES)]
            (grad,) = torch.autograd.grad(torch.stack(chosen).sum(), x)
    finally:
        handle.remove()
    touched = grad.detach().abs().sum(dim=1) != 0  # (2 * SAMPLES, H, W)
    boxes = []
    for unit in range(2):
        mask = touched[unit * SAMPLES : (unit + 1) * SAMPLES].any(dim=0)
        rows = torch.nonzero(mask.any(dim=1)).flatten()
        cols = torch.nonzero(mask.any(dim=0)).flatten()
        if rows.numel() == 0:
            raise FailedPrecondition("the layer's units do not depend on the input")
        boxes.append((int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])))
    return boxes, map_hw


def _field_from(
    supports: list[tuple[int, int, int, int]],
    map_hw: tuple[int, int],
    probe_hw: tuple[int, int],
    input_hw: tuple[int, int],
) -> ReceptiveField:
    """Size, stride and offset from the supports of the centre unit and its neighbour."""
    first, second = _units(map_hw)
    (a_y0, a_x0, a_y1, a_x1), (b_y0, b_x0, _, _) = supports
    size = (a_y1 - a_y0 + 1, a_x1 - a_x0 + 1)
    centre_a = ((a_y0 + a_y1) / 2, (a_x0 + a_x1) / 2)
    stride = []
    edges = ((a_y0, b_y0, probe_hw[0]), (a_x0, b_x0, probe_hw[1]))
    for axis, (lo_a, lo_b, length) in enumerate(edges):
        steps = second[axis] - first[axis]
        # The leading edges move by one stride per unit (the trailing ones may be clipped).
        stride.append(round((lo_b - lo_a) / steps) if steps else length)
    offset = (centre_a[0] - first[0] * stride[0], centre_a[1] - first[1] * stride[1])
    return ReceptiveField(
        size=(size[0], size[1]),
        stride=(stride[0], stride[1]),
        offset=(offset[0], offset[1]),
        input_hw=input_hw,
    )
