"""A real server explains vision transformers: tiny torchvision ViT, timm DeiT distilled
and timm Swin, served from ``module:factory`` configs (``transformer_models``), with the
same seeded weights as a locally built copy, so every answer is compared with the engine.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from rpc_helpers import heatmap, request, stub, tensor_input

from camserve import tensors
from camserve.v1 import explain_pb2 as pb
from camserve_server.methods import explain
from server_harness import ServerThread, settings_for
from transformer_models import DEFAULT_LAYERS, SIZE, build_case

SERVED = {"vit": "torchvision_vit", "deit": "timm_deit_distilled", "swin": "timm_swin"}
ENTRY = """
[[models]]
name = "{name}"
arch = "transformer_models:{factory}"
num_classes = 10
input_size = [{size}, {size}]
"""
# A ViT's last block output reaches the class token only through its class token: its
# patch tokens get no gradient. The first block's output does.
BLOCK_OUTPUT = {"vit": "encoder.layers.encoder_layer_0", "deit": "blocks.0", "swin": "layers.1"}
REFUSED = {"cam", "guided_backprop", "deconvnet", "guided_gradcam"}


@pytest.fixture(scope="module")
def transformers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server of its own for the three transformers (in-process cache)."""
    config = tmp_path_factory.mktemp("transformers") / "models.toml"
    config.write_text(
        "".join(
            ENTRY.format(name=name, factory=factory, size=SIZE) for name, factory in SERVED.items()
        )
    )
    with ServerThread(settings_for(config)) as thread:
        yield thread


@pytest.mark.parametrize("name", list(SERVED))
def test_list_models_shows_token_layers_and_the_default(
    transformers: ServerThread, name: str
) -> None:
    models = {
        m.name: m for m in stub(transformers.address).ListModels(pb.ListModelsRequest()).models
    }
    info = models[name]
    assert info.default_layer == DEFAULT_LAYERS[SERVED[name]]
    assert info.default_layer in info.layers and BLOCK_OUTPUT[name] in info.layers
    assert not REFUSED & set(info.methods)
    assert {"gradcam", "saliency", "occlusion", "scorecam"} <= set(info.methods)


@pytest.mark.parametrize("name", list(SERVED))
@pytest.mark.parametrize(
    ("method", "options"),
    [("gradcam", {}), ("saliency", {}), ("occlusion", {"window": 8, "stride": 8})],
)
def test_a_transformer_answers_as_the_engine_does(
    transformers: ServerThread, name: str, method: str, options: dict[str, int]
) -> None:
    image = tensor_input(11, size=SIZE)
    reply = stub(transformers.address).Explain(
        request(name, method, image, classes=(3,), options=options)
    )
    values = heatmap(reply.heatmaps[0])
    assert values.shape == (SIZE, SIZE) and values.max() > 0
    x = np.array(tensors.from_proto(image.tensor), dtype=np.float32)
    case = build_case(SERVED[name])
    result = explain(case.model, method, torch.from_numpy(x)[None], targets=[3], options=options)
    expected = result.samples[0].heatmaps
    assert expected is not None
    assert float(np.abs(values - expected[0].numpy()).max()) <= 1e-4


@pytest.mark.parametrize("name", list(SERVED))
@pytest.mark.parametrize("at", ["default", "block"])
def test_a_cache_hit_gives_the_map_of_a_miss(
    transformers: ServerThread, name: str, at: str
) -> None:
    """At the default layer (no head: the hit substitutes the activation in a full forward)
    and after a block (the head split off by fx)."""
    layer = "" if at == "default" else BLOCK_OUTPUT[name]
    client = stub(transformers.address)
    image = tensor_input(20 + len(name) + len(at), size=SIZE)
    replies = []
    for method in ("gradcam", "layercam", "gradcam"):
        message = request(name, method, image, classes=(5,))
        message.layer = layer
        replies.append(client.Explain(message))
    miss, other, hit = replies
    assert not miss.cache_hit and other.cache_hit and hit.cache_hit
    assert np.array_equal(heatmap(hit.heatmaps[0]), heatmap(miss.heatmaps[0]))
    assert heatmap(miss.heatmaps[0]).max() > 0
