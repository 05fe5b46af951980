"""The set an indexing stream names, created when new, with the checks its description needs."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..errors import FailedPrecondition, InvalidArgument, NotFound, choices
from ..models import ExplainableModel
from ..models.loading import LoadedModel
from .context import ImageSetContext
from .index_messages import IndexChunk
from .indexer import INPUT_SUFFIX, penultimate_layer
from .records import MAX_LAYERS, SetInfo, check_set_name


def _indexing_model(context: ImageSetContext, name: str) -> LoadedModel:
    """The served model ``name``, which must let its layers be read."""
    models = context.models
    if not name:
        raise InvalidArgument(f"a new image set needs a model; served models: {choices(models)}")
    try:
        loaded = models[name]
    except KeyError:
        raise NotFound(f"unknown model {name!r}; served models: {choices(models)}") from None
    if not loaded.primary.layer_access:
        raise FailedPrecondition(
            f"model {name!r} is compiled: its layers cannot be read, so it cannot index a set"
        )
    return loaded


def _indexed_layers(model: ExplainableModel, layers: Sequence[str]) -> tuple[str, ...]:
    """The layers to index (default: the model's default), each with a spatial map."""
    chosen = [model.resolve_layer(layer) for layer in layers] or [model.default_layer]
    spatial = model.structure.spatial_layers()
    for layer in chosen:
        if layer not in spatial:
            raise InvalidArgument(
                f"layer {layer!r} of model {model.name!r} has no spatial map; "
                f"layers with maps: {choices(spatial)}"
            )
    unique = tuple(dict.fromkeys(chosen))
    if len(unique) > MAX_LAYERS:
        raise InvalidArgument(f"at most {MAX_LAYERS} layers per set, got {len(unique)}")
    return unique


def _embedding_layer(model: ExplainableModel, layer: str) -> str:
    """The embedding layer: a layer's output, ``<layer>:input``, or the penultimate one."""
    if not layer:
        return penultimate_layer(model)
    model.resolve_layer(layer.removesuffix(INPUT_SUFFIX))
    return layer


async def open_set(context: ImageSetContext, first: IndexChunk) -> SetInfo:
    """The set named by the first message, created when new; checked against the request."""
    name = check_set_name(first.set)
    existing = await context.off_loop(_get_or_none, context, name)
    if existing is not None and not first.model and not first.layers:
        context.set_model(existing)
        return existing
    loaded = _indexing_model(context, first.model or (existing.model if existing else ""))
    model = loaded.primary
    info = SetInfo(
        name=name,
        model=loaded.name,
        layers=_indexed_layers(model, first.layers),
        embedding_layer=_embedding_layer(model, first.embedding_layer),
        size=0,
        bytes_used=0,
        created=time.time(),
        max_images=context.settings.max_set_images,
        max_bytes=context.settings.max_set_bytes,
    )
    await context.off_loop(context.store.create, info)
    return await context.off_loop(context.store.get, name)


def _get_or_none(context: ImageSetContext, name: str) -> SetInfo | None:
    try:
        return context.store.get(name)
    except NotFound:
        return None


__all__ = ["open_set"]
