"""Token layers to patch grids: prefix tokens dropped (DeiT distilled: two), patches laid
out in raster order, Swin's channels-last maps permuted, and the grid found from the
model (patch size, ``num_prefix_tokens``, or a square token count)."""

from __future__ import annotations

import pytest
import torch

from camserve_server.errors import InvalidArgument
from camserve_server.models.grid_detection import layer_grids
from camserve_server.models.layer_grid import LayerGrid
from transformer_models import DEFAULT_LAYERS, SIZE, build_case

INPUT = (SIZE, SIZE)


def numbered_tokens(n: int, tokens: int, channels: int) -> torch.Tensor:
    """``(n, tokens, channels)`` whose value is ``1000 * sample + 10 * token + channel``."""
    sample = torch.arange(n)[:, None, None] * 1000
    token = torch.arange(tokens)[None, :, None] * 10
    channel = torch.arange(channels)[None, None, :]
    return (sample + token + channel).float()


@pytest.mark.parametrize(("name", "prefix"), [("timm_deit_distilled", 2), ("timm_vit", 1)])
def test_prefix_tokens_are_timms_num_prefix_tokens(name: str, prefix: int) -> None:
    grid = build_case(name).model.structure.grid(DEFAULT_LAYERS[name])
    assert grid == LayerGrid("tokens", 192, 4, 4, INPUT, prefix)


def test_without_num_prefix_tokens_the_prefix_is_what_the_grid_leaves() -> None:
    """torchvision's ViT has a class token and no ``num_prefix_tokens``: 17 - 4*4 = 1."""
    grid = build_case("torchvision_vit").model.structure.grid(DEFAULT_LAYERS["torchvision_vit"])
    assert grid == LayerGrid("tokens", 32, 4, 4, INPUT, 1)


def test_deit_drops_both_prefix_tokens_and_lays_patches_in_raster_order() -> None:
    grid = LayerGrid("tokens", 3, 4, 4, INPUT, prefix=2)
    tokens = numbered_tokens(2, 18, 3)
    maps = grid.maps(tokens, INPUT)
    assert maps.shape == (2, 3, 4, 4)
    for sample in range(2):
        for channel in range(3):
            for row in range(4):
                for column in range(4):
                    token = 2 + row * 4 + column  # tokens 0 and 1: class, distillation
                    expected = 1000 * sample + 10 * token + channel
                    assert float(maps[sample, channel, row, column]) == expected


@pytest.mark.parametrize("name", ["timm_swin", "torchvision_swin"])
def test_swin_channels_last_maps_are_permuted(name: str) -> None:
    grid = build_case(name).model.structure.grid(DEFAULT_LAYERS[name])
    assert grid == LayerGrid("channels_last", 32, 4, 4, INPUT)
    output = torch.randn(2, 4, 4, 32)
    assert torch.equal(grid.maps(output, INPUT), output.permute(0, 3, 1, 2))


def test_the_cache_form_of_tokens_is_one_k_h_w_entry_per_sample() -> None:
    grid = LayerGrid("tokens", 3, 4, 4, INPUT, prefix=2)
    tokens = numbered_tokens(2, 18, 3)
    stored = grid.stored(tokens)
    assert stored.shape == (2, 18, 3, 1)
    assert torch.equal(grid.restored(stored), tokens)


def test_zeroing_a_token_channel_zeroes_it_in_every_token() -> None:
    grid = LayerGrid("tokens", 3, 4, 4, INPUT, prefix=2)
    tokens = numbered_tokens(2, 18, 3) + 1
    grid.zero_channels(tokens, torch.tensor([1]), torch.tensor([2]))
    assert bool((tokens[1, :, 2] == 0).all())
    assert bool((tokens[0] != 0).all()) and bool((tokens[1, :, :2] != 0).all())


def test_token_count_that_does_not_fill_the_grid_is_refused() -> None:
    grid = LayerGrid("tokens", 3, 4, 4, INPUT, prefix=1)
    with pytest.raises(InvalidArgument, match="do not fill the 4x4 patch grid"):
        grid.maps(torch.zeros(1, 20, 3), INPUT)


def test_a_token_grid_follows_the_input_size() -> None:
    grid = LayerGrid("tokens", 3, 4, 4, INPUT, prefix=1)
    maps = grid.maps(torch.zeros(1, 1 + 8 * 6, 3), (64, 48))
    assert maps.shape == (1, 3, 8, 6)


def test_without_a_patch_size_the_token_count_must_be_a_square_and_a_prefix() -> None:
    shapes = {"tokens": (1, 17, 8), "odd": (1, 7, 8), "batched": (4, 16, 8), "vector": (1, 8)}
    grids = layer_grids(shapes, INPUT, grid=None, prefix=None)
    assert grids == {"tokens": LayerGrid("tokens", 8, 4, 4, INPUT, 1)}
    assert layer_grids({"tokens": (1, 17, 8)}, INPUT, grid=None, prefix=2) == {}


def test_a_map_that_reads_both_ways_stays_channels_first() -> None:
    """``(1, 4, 4, 4)`` on a 4x4 grid could be channels last too: a CNN's reading wins."""
    grids = layer_grids({"square": (1, 4, 4, 4), "swin": (1, 4, 4, 32)}, INPUT, (4, 4), None)
    assert grids["square"].kind == "channels_first"
    assert grids["swin"].kind == "channels_last"
