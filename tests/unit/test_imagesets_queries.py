"""Queries on a set built from the demo data, checked against brute force.

- nearest neighbours in feature space share the query's class far more often than in
  pixel space (both rates are printed);
- ``top_activating`` returns exactly the members a brute-force pass ranks highest, each
  box holds its unit's receptive-field centre, and noise outside the box leaves the
  unit's activation unchanged (the patch is all the unit sees);
- the 2-D maps are deterministic and keep classes apart.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from camserve_server.demo import INPUT_SIZE, load_demo_model, preprocess
from camserve_server.demo.data import Sample, make_dataset
from camserve_server.errors import InvalidArgument
from camserve_server.imagesets.indexer import penultimate_layer
from camserve_server.imagesets.ingest import index_arrays
from camserve_server.imagesets.projection import embedding_map
from camserve_server.imagesets.queries import cosine_search, nearest, normalised, top_activating
from camserve_server.imagesets.receptive_field import receptive_field
from camserve_server.imagesets.records import SetInfo
from camserve_server.imagesets.store_memory import MemorySetStore
from camserve_server.models import ExplainableModel

LAYERS = ("features.block2", "features.block3")
N = 180


class _Indexed:
    def __init__(self) -> None:
        self.model = ExplainableModel(load_demo_model(), input_size=INPUT_SIZE, name="demo")
        self.samples: list[Sample] = make_dataset(N, seed=11)
        self.ids = [f"img{i:03d}" for i in range(N)]
        self.label = {
            member_id: s.label for member_id, s in zip(self.ids, self.samples, strict=True)
        }
        self.store = MemorySetStore()
        embedding = penultimate_layer(self.model)
        self.store.create(SetInfo("shapes", "demo", LAYERS, embedding, 0, 0, 0.0, 10_000, 1 << 30))
        index_arrays(
            self.model,
            self.store,
            "shapes",
            [(member_id, s.image) for member_id, s in zip(self.ids, self.samples, strict=True)],
            to_input=preprocess,
            layers=LAYERS,
            embedding_layer=embedding,
        )


@pytest.fixture(scope="module")
def indexed() -> _Indexed:
    return _Indexed()


def _agreement(indexed: _Indexed, space: str, k: int = 5) -> float:
    same = total = 0
    for member_id in indexed.ids[::3]:
        for found in nearest(indexed.store, "shapes", member_id, k, space):
            assert found.id != member_id
            same += indexed.label[found.id] == indexed.label[member_id]
            total += 1
    return same / total


def test_feature_neighbours_share_the_class_far_more_than_pixel_neighbours(
    indexed: _Indexed,
) -> None:
    features = _agreement(indexed, "features")
    pixels = _agreement(indexed, "pixels")
    print(f"same-class rate of 5 nearest: features {features:.3f}, pixels {pixels:.3f}")
    assert features >= 0.8
    assert pixels <= 0.5  # six balanced classes: chance is 1/6
    assert features >= pixels + 0.4


def test_nearest_is_exact_and_ordered(indexed: _Indexed) -> None:
    ids, matrix = indexed.store.matrix("shapes")
    query = matrix[7]
    found = nearest(indexed.store, "shapes", query, 10)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    brute = 1.0 - unit @ (query / np.linalg.norm(query))
    order = np.argsort(brute, kind="stable")[:10]
    assert [f.id for f in found] == [ids[i] for i in order]
    np.testing.assert_allclose([f.distance for f in found], brute[order], atol=1e-5)
    assert found[0].id == ids[7] and found[0].distance == pytest.approx(0.0, abs=1e-5)
    distances, index = cosine_search(normalised(matrix), torch.from_numpy(unit[[7, 8]]), 3)
    assert index[:, 0].tolist() == [7, 8]
    with pytest.raises(InvalidArgument, match=r"k must be in \[1, 1000\]"):
        nearest(indexed.store, "shapes", query, 0)
    with pytest.raises(InvalidArgument, match="space must be one of features, pixels"):
        nearest(indexed.store, "shapes", query, 3, "words")
    with pytest.raises(InvalidArgument, match="the set's have 64"):
        nearest(indexed.store, "shapes", query[:10], 3)
    del distances


def _brute_force_maxima(model: ExplainableModel, layer: str, images: torch.Tensor) -> torch.Tensor:
    """Per image and channel, the maximum of ``layer``'s map, by a plain hooked forward."""
    outputs: list[torch.Tensor] = []
    handle = model.submodule(layer).register_forward_hook(lambda _m, _a, out: outputs.append(out))
    try:
        with torch.inference_mode():
            model.module(images)
    finally:
        handle.remove()
    return outputs[0].amax(dim=(2, 3))


def _up_to_block3(module: nn.Module) -> nn.Module:
    features = dict(module.named_children())["features"]
    return nn.Sequential(*features.children()).eval()


@pytest.mark.parametrize(("layer", "channel"), [("features.block3", 5), ("features.block2", 17)])
def test_top_patches_are_the_brute_force_top_and_hold_the_field_centre(
    indexed: _Indexed, layer: str, channel: int
) -> None:
    field = receptive_field(indexed.model, layer)
    top = top_activating(indexed.store, "shapes", layer, channel, 8)
    images = torch.stack([preprocess(s.image) for s in indexed.samples])
    maxima = _brute_force_maxima(indexed.model, layer, images)[:, channel]
    brute = torch.argsort(maxima, descending=True, stable=True)[:8].tolist()
    assert [t.id for t in top] == [indexed.ids[i] for i in brute]
    np.testing.assert_allclose([t.activation for t in top], maxima[brute].numpy(), rtol=1e-5)
    assert all(a.activation >= b.activation for a, b in itertools.pairwise(top))

    run = _up_to_block3(indexed.model.module) if layer.endswith("block3") else None
    for item in top:
        x0, y0, x1, y1 = item.box
        cy, cx = field.centre(*item.position)
        assert x0 <= cx < x1 and y0 <= cy < y1
        assert (x1 - x0, y1 - y0) <= field.size[::-1]
        if run is None:
            continue
        # Everything outside the box replaced by noise: the unit must not move.
        x = preprocess(indexed.samples[indexed.ids.index(item.id)].image)
        noisy = torch.randn(3, *INPUT_SIZE, generator=torch.Generator().manual_seed(0)) * 3
        noisy[:, y0:y1, x0:x1] = x[:, y0:y1, x0:x1]
        with torch.inference_mode():
            unit = run(noisy[None])[0, channel, item.position[0], item.position[1]]
        assert float(unit) == pytest.approx(item.activation, rel=1e-4, abs=1e-4)


def test_top_activating_checks_its_arguments(indexed: _Indexed) -> None:
    receptive_field(indexed.model, "features.block3")
    with pytest.raises(InvalidArgument, match=r"channel must be in \[0, 64\)"):
        top_activating(indexed.store, "shapes", "features.block3", 64, 3)
    with pytest.raises(InvalidArgument, match="indexed layers"):
        top_activating(indexed.store, "shapes", "features.block1", 0, 3)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_maps_are_deterministic_and_keep_classes_apart(
    indexed: _Indexed, method: str
) -> None:
    ids, matrix = indexed.store.matrix("shapes")
    ids, matrix = ids[:90], matrix[:90]
    xy = embedding_map(ids, matrix, method=method, seed=0)
    assert xy.shape == (90, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    np.testing.assert_array_equal(xy, embedding_map(ids, matrix, method=method, seed=0))
    labels = np.array([indexed.label[i] for i in ids])
    d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest_in_map = labels[d.argmin(axis=1)]
    assert (nearest_in_map == labels).mean() >= 0.6  # chance: 1/6
    with pytest.raises(InvalidArgument, match="method must be one of pca, tsne"):
        embedding_map(ids, matrix, method="umap")
