"""Receptive fields measured from the model agree with a brute-force perturbation check.

For a unit of a layer, each probe pixel of a random input is changed (all three channels,
by a large amount) and the layer is run again: the unit changes only for pixels inside
the measured box, and pixels just inside the box's edges on the lines through the unit's
centre do change it. The expected sizes are also the textbook ones (conv/pool arithmetic).
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from camserve_server.demo import INPUT_SIZE, load_demo_model
from camserve_server.errors import FailedPrecondition
from camserve_server.imagesets.receptive_field import (
    ReceptiveField,
    cached_receptive_field,
    receptive_field,
)
from camserve_server.models import ExplainableModel

Pixel = tuple[int, int]  # (y, x)


def _changed(
    run: nn.Module, x: torch.Tensor, unit: Pixel, pixels: list[Pixel], chunk: int = 128
) -> set[Pixel]:
    """The probe pixels whose perturbation (up or down) changes the unit's output."""
    probes = [(p, delta) for p in pixels for delta in (8.0, -8.0)]
    with torch.inference_mode():
        base = run(x[None])[0, :, unit[0], unit[1]]
        found: set[Pixel] = set()
        for start in range(0, len(probes), chunk):
            part = probes[start : start + chunk]
            batch = x[None].repeat(len(part), 1, 1, 1)
            for i, ((py, px), delta) in enumerate(part):
                batch[i, :, py, px] += delta
            out = run(batch)[:, :, unit[0], unit[1]]
            moved = (out - base[None]).abs().amax(dim=1) > 1e-5
            found.update(p for (p, _), m in zip(part, moved.tolist(), strict=True) if m)
    return found


def _edge_lines(
    box: tuple[int, int, int, int], hw: tuple[int, int], centre: Pixel, near: int
) -> list[Pixel]:
    """Pixels on both lines through ``centre`` within ``near`` of one of the box's edges."""
    x0, y0, x1, y1 = box
    height, width = hw
    xs = [x for x in range(width) if min(abs(x - x0), abs(x - (x1 - 1))) <= near]
    ys = [y for y in range(height) if min(abs(y - y0), abs(y - (y1 - 1))) <= near]
    return sorted({(centre[0], x) for x in xs} | {(y, centre[1]) for y in ys})


def _ring(box: tuple[int, int, int, int], hw: tuple[int, int], step: int) -> list[Pixel]:
    """Every ``step``-th pixel of the ring just outside the box."""
    x0, y0, x1, y1 = box
    pixels: set[Pixel] = set()
    for x in range(x0 - 1, x1 + 1, step):
        pixels |= {(y0 - 1, x), (y1, x)}
    for y in range(y0 - 1, y1 + 1, step):
        pixels |= {(y, x0 - 1), (y, x1)}
    return sorted((y, x) for y, x in pixels if 0 <= y < hw[0] and 0 <= x < hw[1])


def _check_unit(
    run: nn.Module,
    field: ReceptiveField,
    hw: tuple[int, int],
    unit: Pixel,
    *,
    seeds: int,
    step: int = 1,
) -> None:
    """No pixel outside the box changes the unit; on the centre lines the box's edges do.

    One random input can leave an edge pixel's only path through an inactive ReLU or a
    max-pool that picks another element, so the edges are checked over several inputs.
    """
    box = field.box(unit[0], unit[1], hw)
    cy, cx = field.centre(*unit)
    x0, y0, x1, y1 = box
    assert x0 <= cx < x1 and y0 <= cy < y1  # the box holds the unit's centre
    centre = (min(max(round(cy), 0), hw[0] - 1), min(max(round(cx), 0), hw[1] - 1))
    lines = _edge_lines(box, hw, centre, near=step + 2)
    changed: set[Pixel] = set()
    for seed in range(seeds):
        x = torch.randn(3, *hw, generator=torch.Generator().manual_seed(seed))
        probes = lines + (_ring(box, hw, step) if seed == 0 else [])
        changed |= _changed(run, x, unit, probes)
    outside = {(y, x_) for y, x_ in changed if not (y0 <= y < y1 and x0 <= x_ < x1)}
    assert not outside, f"pixels outside the field {box} change unit {unit}: {sorted(outside)[:5]}"
    on_row = sorted(x_ for y, x_ in changed if y == centre[0])
    on_col = sorted(y for y, x_ in changed if x_ == centre[1])
    assert (on_row[0], on_row[-1] + 1) == (x0, x1), (on_row, box)  # the field is not too large
    assert (on_col[0], on_col[-1] + 1) == (y0, y1), (on_col, box)


def _up_to(module: nn.Module, layer: str) -> nn.Module:
    """The demo model up to ``layer``, cut from its sequential graph (not by the code tested)."""
    children = dict(module.named_children())
    features = children["features"]
    block = layer.split(".")[1]
    kept = []
    for name, child in features.named_children():
        kept.append(child)
        if name == block:
            break
    return nn.Sequential(*kept).eval()


@pytest.fixture(scope="module")
def demo() -> ExplainableModel:
    return ExplainableModel(load_demo_model(), input_size=INPUT_SIZE, name="demo-rf")


@pytest.mark.parametrize(
    ("layer", "size", "stride"),
    [("features.block1", 6, 2), ("features.block2", 16, 4), ("features.block3", 48, 4)],
)
def test_demo_fields_match_brute_force(
    demo: ExplainableModel, layer: str, size: int, stride: int
) -> None:
    field = receptive_field(demo, layer)
    assert (field.size, field.stride) == ((size, size), (stride, stride))
    run = _up_to(demo.module, layer)
    rows = INPUT_SIZE[0] // stride
    for unit in [(rows // 2, rows // 2), (1, rows - 2), (rows - 1, 0)]:
        _check_unit(run, field, INPUT_SIZE, unit, seeds=3, step=3)
    assert cached_receptive_field("demo-rf", layer) is field


@pytest.mark.slow
def test_seeded_resnet18_layer_matches_brute_force() -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    hw = (128, 128)  # a field does not depend on the input size; smaller is quicker
    model = ExplainableModel(net, input_size=hw, name="r18-rf")
    field = receptive_field(model, "layer2")
    assert (field.size, field.stride) == ((99, 99), (8, 8))  # 7+2*2 + 4*2*4 + 8 + 3*2*8
    run = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)
    _check_unit(run, field, hw, (8, 8), seeds=3, step=4)


def test_unmeasured_field_is_a_clear_error() -> None:
    with pytest.raises(FailedPrecondition, match="has not been measured"):
        cached_receptive_field("never-loaded", "layer9")
