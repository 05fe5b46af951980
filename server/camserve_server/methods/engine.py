"""The engine's entry points: ``explain`` validates a batch, then runs one method on it;
``run_batch`` runs a batch the server has already checked (``plan.make_plan``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import InvalidArgument
from ..models import ExplainableModel
from ..options import parse_options
from .base import BatchInput, BatchResult, CachedLayer, Method, TargetRequest, validate_targets
from .precision import full_precision
from .registry import get_method

TargetLike = int | Sequence[int] | TargetRequest


def explain(
    model: ExplainableModel,
    method: str,
    x: torch.Tensor,
    *,
    targets: Sequence[TargetLike] | None = None,
    top_k: int = 1,
    layer: str | None = None,
    options: Mapping[str, Any] | None = None,
    cached: Sequence[CachedLayer | None] | None = None,
) -> BatchResult:
    """Explain a batch ``x`` ``(N, 3, H, W)`` with one method.

    ``targets`` gives one entry per sample (a class, a list of classes or a
    ``TargetRequest``); without it every sample explains its ``top_k`` predicted
    classes. ``cached`` holds, per sample, a layer activation already computed,
    which lets the method skip the backbone. Tensors in the result stay on the
    model's device. Called inside ``torch.autocast`` (the server's ``precision``),
    the method computes in reduced precision unless it declares
    ``mixed_precision = False``; its heatmaps, logits and activations are float32
    either way.
    """
    chosen = get_method(method)
    parsed = parse_options(method, chosen.options, options)
    # A batch served wholly from the cache by a method that never reads pixels
    # carries placeholder inputs: scanning them for NaN would be wasted work.
    pixels_unread = (
        cached is not None
        and all(row is not None for row in cached)
        and not chosen.pixels_on_cache_hit
    )
    batch_x = validate_input(x, model, check_values=not pixels_unread)
    n = batch_x.shape[0]
    requests = normalise_targets(targets, n, top_k)
    validate_targets(requests, model.num_classes)
    resolved_layer: str | None = None
    if chosen.uses_layer and (layer or not chosen.own_default_layer):
        resolved_layer = model.resolve_layer(layer)
    chosen.check_model(model)
    cache_rows: list[CachedLayer | None] = list(cached) if cached is not None else [None] * n
    if len(cache_rows) != n:
        raise InvalidArgument(f"{len(cache_rows)} cache entries for a batch of {n}")
    return run_batch(
        chosen, BatchInput(model, batch_x, requests, resolved_layer, parsed, cache_rows)
    )


def run_batch(method: Method, batch: BatchInput) -> BatchResult:
    """Run ``method`` on a valid batch, in float32 when it declares
    ``mixed_precision = False``. Nothing is checked: the caller has."""
    if not method.mixed_precision:
        with full_precision(batch.model.device):
            return method.run(batch)
    return method.run(batch)


def validate_input(
    x: torch.Tensor, model: ExplainableModel, *, check_values: bool = True
) -> torch.Tensor:
    """Check shape, dtype and (unless ``check_values`` is off) values; return the batch on
    the model's device."""
    if not isinstance(x, torch.Tensor):
        raise InvalidArgument(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise InvalidArgument(f"input must be float32, got {x.dtype}")
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[0] == 0:
        raise InvalidArgument(
            f"input must have shape (N, 3, H, W) with N >= 1, got {tuple(x.shape)}"
        )
    if min(x.shape[2:]) < 8:
        raise InvalidArgument(f"input is too small: {tuple(x.shape[2:])}, at least 8x8 is needed")
    if check_values and not bool(torch.isfinite(x).all()):
        raise InvalidArgument("input contains NaN or infinite values")
    return x.to(model.device)


def normalise_targets(
    targets: Sequence[TargetLike] | None, n: int, top_k: int
) -> list[TargetRequest]:
    """One ``TargetRequest`` per sample; a length mismatch is an error, never a silent zero map."""
    if targets is None:
        return [TargetRequest(top_k=top_k)] * n
    if len(targets) != n:
        raise InvalidArgument(f"{len(targets)} targets given for a batch of {n} samples")
    requests = []
    for target in targets:
        if isinstance(target, TargetRequest):
            requests.append(target)
        elif isinstance(target, int):
            requests.append(TargetRequest(classes=(int(target),)))
        else:
            classes = tuple(int(c) for c in target)
            requests.append(
                TargetRequest(classes=classes) if classes else TargetRequest(top_k=top_k)
            )
    return requests
