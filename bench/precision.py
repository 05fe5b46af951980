"""Mixed precision and ``channels_last``: their effect on Grad-CAM speed and parity.

The server's ``precision`` setting runs the engine under the same autocast; this
harness measures a standalone Grad-CAM equivalent to the engine's (Selvaraju et
al. 2017: ``L = ReLU(sum_k a_k A_k)`` with ``a_k = mean_ij dy_c/dA_k,ij``; the
backward stops at the layer, the heatmap pipeline is the engine's
``cam_heatmaps``). Each variant's maps are compared with the float32, contiguous
maps: max |difference| of heatmaps in [0, 1].
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass

import torch
from torch import nn

from camserve_server.methods.base import SampleResult
from camserve_server.methods.engine import explain
from camserve_server.methods.heatmap import cam_heatmaps
from camserve_server.models import ExplainableModel


@dataclass(frozen=True)
class Variant:
    """A way to run the model: an autocast dtype (None: float32) and a memory format."""

    name: str
    autocast: torch.dtype | None
    channels_last: bool


CPU_VARIANTS = (
    Variant("float32", None, False),
    Variant("float32, channels_last", None, True),
    Variant("bfloat16 autocast", torch.bfloat16, False),
    Variant("bfloat16 autocast, channels_last", torch.bfloat16, True),
)


def gradcam(model: nn.Module, layer: str, x: torch.Tensor, variant: Variant) -> torch.Tensor:
    """Grad-CAM heatmaps ``(N, H, W)`` for each image's top class, run as ``variant``."""
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: object, out: torch.Tensor) -> torch.Tensor:
        leaf = out.detach().requires_grad_(True)  # the backward stops here
        captured.append(leaf)
        return leaf

    handle = model.get_submodule(layer).register_forward_hook(keep)
    device = x.device.type
    autocast = (
        torch.autocast(device, dtype=variant.autocast)
        if variant.autocast is not None
        else contextlib.nullcontext()
    )
    if variant.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        with torch.enable_grad(), autocast:
            logits = model(x)
            score = logits.float().max(dim=1).values.sum()
        (gradients,) = torch.autograd.grad(score, captured[0])
    finally:
        handle.remove()
    activation = captured[0].detach().float()
    weights = gradients.float().mean(dim=(2, 3))
    cam = torch.einsum("nk,nkhw->nhw", weights, activation)
    heat: torch.Tensor = cam_heatmaps(cam, (x.shape[-2], x.shape[-1]))[0]
    return heat


def _prepared(model: nn.Module, channels_last: bool) -> nn.Module:
    prepared = copy.deepcopy(model).eval()
    for parameter in prepared.parameters():
        parameter.requires_grad_(False)
    return prepared.to(memory_format=torch.channels_last) if channels_last else prepared


def compare(
    model: nn.Module, layer: str, x: torch.Tensor, repeats: int = 3
) -> dict[str, dict[str, float]]:
    """Images per second and max |heatmap difference| against float32 for each variant,
    plus the float32 maps' difference from the engine's own ``gradcam`` (a sanity check)."""
    results: dict[str, dict[str, float]] = {}
    reference: torch.Tensor | None = None
    for variant in CPU_VARIANTS:
        prepared = _prepared(model, variant.channels_last)
        maps = gradcam(prepared, layer, x, variant)  # warm-up, and the maps compared
        started = time.perf_counter()
        for _ in range(repeats):
            gradcam(prepared, layer, x, variant)
        rate = x.shape[0] * repeats / (time.perf_counter() - started)
        if reference is None:
            reference = maps
        results[variant.name] = {
            "images_per_s": rate,
            "max_abs_diff": float((maps - reference).abs().max()),
            "mean_abs_diff": float((maps - reference).abs().mean()),
        }
    assert reference is not None
    engine_model = ExplainableModel(
        _prepared(model, False), input_size=(x.shape[-2], x.shape[-1]), channels_last=False
    )
    engine = explain(engine_model, "gradcam", x, layer=layer)
    engine_maps = torch.stack([_first_heatmap(sample) for sample in engine.samples])
    results["float32"]["engine_max_abs_diff"] = float((engine_maps - reference).abs().max())
    return results


def _first_heatmap(sample: SampleResult) -> torch.Tensor:
    """The first target's heatmap of one explained sample (CAM methods always have one)."""
    assert sample.heatmaps is not None
    return sample.heatmaps[0]
