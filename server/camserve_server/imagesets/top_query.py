"""The members that most activate a channel, each with the patch its maximal unit sees.

The ranking is the engine's (``queries.top_activating``: the highest per-member maxima of
the channel, Zeiler & Fergus 2014); this module checks the request, computes the layer's
receptive field on a device worker and cuts each member's patch from its kept picture.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import InvalidArgument
from ..models.loading import LoadedModel
from ..runtime.device_slot import Priority
from . import prepare
from .context import ImageSetContext
from .queries import top_activating
from .query_arguments import class_label, in_range
from .receptive_field import ReceptiveField, receptive_field
from .records import SetInfo
from .store import check_layer

MAX_TOP_K = 256
DEFAULT_TOP_K = 9


@dataclass(frozen=True)
class PatchItem:
    """A member that activates a channel, and the PNG patch its maximal unit sees."""

    id: str
    activation: float
    position: tuple[int, int]
    box: tuple[int, int, int, int]
    patch: bytes
    predicted: int
    label: str


@dataclass(frozen=True)
class TopActivatingAnswer:
    layer: str
    channel: int
    channels: int
    receptive_field: tuple[int, int]
    items: list[PatchItem]


def _channels(loaded: LoadedModel, layer: str) -> int:
    shape = loaded.primary.structure.layers[layer].shape
    return int(shape[1]) if len(shape) > 1 else 0


async def top_activating_query(
    context: ImageSetContext, name: str, layer: str, channel: int, k: int
) -> TopActivatingAnswer:
    """The ``k`` members whose maximum of ``channel`` is highest, with their patches."""
    started = time.perf_counter()
    info = await context.describe(name)
    layer = check_layer(info, layer or info.layers[0])
    loaded = context.set_model(info)
    channels = _channels(loaded, layer)
    if not 0 <= channel < channels:
        raise InvalidArgument(
            f"channel must be in [0, {channels}) for layer {layer!r}, got {channel}"
        )
    k = in_range("k", k, DEFAULT_TOP_K, MAX_TOP_K)
    field_ = await context.on_device(
        lambda models: receptive_field(models[loaded.name], layer), Priority.LIGHT
    )
    items = await context.off_loop(_patches, context, info, loaded, layer, channel, k, field_)
    context.observe_latency("top_activating", started)
    return TopActivatingAnswer(
        layer=layer,
        channel=channel,
        channels=channels,
        receptive_field=(int(field_.size[0]), int(field_.size[1])),
        items=items,
    )


def _patches(
    context: ImageSetContext,
    info: SetInfo,
    loaded: LoadedModel,
    layer: str,
    channel: int,
    k: int,
    field_: ReceptiveField,
) -> list[PatchItem]:
    store = context.store
    tops = top_activating(store, info.name, layer, channel, k, field=field_)
    labels = store.predictions(info.name)
    images = store.images(info.name, [top.id for top in tops])  # one read for all k
    items = []
    for top, image in zip(tops, images, strict=True):
        box = tuple(int(v) for v in top.box)
        predicted = labels.of(info.name, top.id)
        items.append(
            PatchItem(
                id=top.id,
                activation=float(top.activation),
                position=(int(top.position[0]), int(top.position[1])),
                box=(box[0], box[1], box[2], box[3]),
                patch=prepare.cut_patch(image, (box[0], box[1], box[2], box[3])),
                predicted=predicted,
                label=class_label(loaded, predicted),
            )
        )
    return items


__all__ = ["DEFAULT_TOP_K", "MAX_TOP_K", "PatchItem", "TopActivatingAnswer", "top_activating_query"]
