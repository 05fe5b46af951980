"""Vision transformers beyond CAM parity: the backward stops at the token layer, the
layer-free methods and the activation methods work, the methods that cannot apply are
refused by name, and a cached token layer gives what a computed one does (a head split
off after a block; the full-forward fallback at the last block's first norm)."""

from __future__ import annotations

import pytest
import torch
from engine_models import SMALL_OPTIONS, assert_close, leftover_hooks, rows_through

from camserve_server.methods import BatchResult, CachedLayer, MethodNotApplicable, explain
from camserve_server.models import ExplainableModel
from camserve_server.models.loading import supported_methods
from transformer_models import DEFAULT_LAYERS, FACTORIES, TransformerCase, build_case

REFUSED = ("cam", "guided_backprop", "deconvnet", "guided_gradcam")
# Block outputs, where the fx graph splits off a head. A ViT's last block output reaches
# the logits only through its class token (its patch tokens get no gradient): the first's.
BLOCK_OUTPUTS = {
    "torchvision_vit": "encoder.layers.encoder_layer_0",
    "timm_vit": "blocks.0",
    "timm_deit_distilled": "blocks.0",
    "timm_swin": "layers.1",
    "torchvision_swin": "features.3",
}
TARGETS = [[1], [2, 3], [4]]


@pytest.fixture(scope="module", params=list(FACTORIES))
def case(request: pytest.FixtureRequest) -> TransformerCase:
    name: str = request.param
    return build_case(name)


def patch_embedding(model: ExplainableModel) -> torch.nn.Module:
    """The patchifying convolution: every backbone pass goes through it."""
    return model.submodule(model.structure.conv_layers[0])


def test_gradcam_backpropagates_to_the_token_layer_only(case: TransformerCase) -> None:
    calls: list[str] = []
    module = patch_embedding(case.model)
    handle = module.register_full_backward_hook(lambda _m, _gi, _go: calls.append("cam"))
    try:
        cam = explain(case.model, "gradcam", case.x, targets=[[1], [2]])
        assert calls == []
        explain(case.model, "saliency", case.x, targets=[[1], [2]])
        assert calls, "the control: an input gradient does pass the patch embedding"
    finally:
        handle.remove()
    assert all(not p.requires_grad for p in case.model.module.parameters())
    assert all(s.raw is not None and bool(s.raw.abs().sum() > 0) for s in cam.samples)
    assert leftover_hooks(case.model.module) == []


def test_the_methods_that_cannot_apply_are_refused_by_name(case: TransformerCase) -> None:
    listed = supported_methods(case.model)
    assert not set(REFUSED) & set(listed)
    for method in REFUSED:
        with pytest.raises(MethodNotApplicable, match=case.name):
            explain(case.model, method, case.x, targets=[[0], [1]])
    assert {"gradcam", "scorecam", "ablationcam", "eigencam", "saliency"} <= set(listed)


@pytest.mark.parametrize(
    "method",
    ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "occlusion"],
)
def test_layer_free_methods_explain_a_transformer(case: TransformerCase, method: str) -> None:
    result = explain(
        case.model, method, case.x, targets=[[1], [2]], options=SMALL_OPTIONS.get(method)
    )
    for sample in result.samples:
        assert sample.heatmaps is not None and sample.raw is not None
        assert sample.heatmaps.shape == (1, 32, 32)
        assert sample.raw.shape == (1, 3, 32, 32)
        assert bool(torch.isfinite(sample.raw).all()) and not bool(sample.empty.any())


def test_activation_methods_read_the_patch_grid(case: TransformerCase) -> None:
    layer = DEFAULT_LAYERS[case.name]
    grid = case.model.structure.grid(layer)
    assert grid is not None
    maps = explain(case.model, "feature_maps", case.x, options={"top_k": 3})
    profile = explain(case.model, "channel_profile", case.x)
    embedding = explain(case.model, "embedding", case.x)
    for i in range(2):
        top, means = maps.samples[i].raw, profile.samples[i].raw
        channels, vector = maps.samples[i].channels, embedding.samples[i].raw
        assert top is not None and means is not None and channels is not None
        assert top.shape == (3, 4, 4) and means.shape == (grid.channels,)
        assert_close(top.mean(dim=(1, 2)), means[channels], atol=1e-6)
        assert vector is not None and vector.dim() == 1


def from_cache(result: BatchResult, rows: tuple[int, ...]) -> list[CachedLayer | None]:
    """Cache entries for ``rows`` as the server stores them: one activation and logits each."""
    assert result.activations is not None and result.logits is not None
    return [
        CachedLayer(result.activations[i].clone(), result.logits[i].clone()) if i in rows else None
        for i in range(result.activations.shape[0])
    ]


def assert_same(method: str, hit: BatchResult, miss: BatchResult) -> None:
    tolerance = 1e-4 if method in ("scorecam", "ablationcam") else 1e-5
    for a, b in zip(hit.samples, miss.samples, strict=True):
        assert torch.equal(a.targets, b.targets) and torch.equal(a.empty, b.empty)
        assert a.raw is not None and b.raw is not None
        assert_close(a.raw, b.raw, atol=tolerance, rel=tolerance)
        if b.heatmaps is not None:
            assert a.heatmaps is not None
            assert_close(a.heatmaps, b.heatmaps, atol=tolerance)


@pytest.mark.parametrize("at", ["default", "block"])
@pytest.mark.parametrize(
    "method", ["gradcam", "layercam", "eigencam", "feature_maps", "scorecam", "ablationcam"]
)
@pytest.mark.parametrize("name", ["torchvision_vit", "timm_deit_distilled", "timm_swin"])
def test_a_cached_token_layer_gives_the_computed_result(name: str, method: str, at: str) -> None:
    case = build_case(name)
    model = case.model
    layer = DEFAULT_LAYERS[name] if at == "default" else BLOCK_OUTPUTS[name]
    split = model.head(layer) is not None
    assert split == (at == "block"), "a head after a block; none inside it (a skip connection)"
    x = torch.cat([case.x, case.x[:1].flip(-1)])
    targets = TARGETS if method not in ("feature_maps",) else None
    options = SMALL_OPTIONS.get(method)
    with rows_through(patch_embedding(model)) as fresh_rows:
        miss = explain(model, method, x, targets=targets, layer=layer, options=options)
    with rows_through(patch_embedding(model)) as cached_rows:
        hit = explain(
            model,
            method,
            x,
            targets=targets,
            layer=layer,
            options=options,
            cached=from_cache(miss, (0, 1, 2)),
        )
    assert_same(method, hit, miss)
    if targets is not None:  # not vacuous: some map is not empty
        assert not all(bool(s.empty.all()) for s in miss.samples)
    if split or method in ("eigencam", "feature_maps"):
        assert sum(cached_rows) == sum(fresh_rows) - 3  # each hit skipped its backbone pass
    assert leftover_hooks(model.module) == []
