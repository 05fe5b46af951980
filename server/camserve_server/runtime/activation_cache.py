"""The activation cache as a request sees it: one component for the service and the workers.

A method that reads a layer's activation (``Method.caches_layer``) can skip the
backbone when the same image was seen before. This component holds all of that:

- the key (``CacheKey``: model, weights, preprocessing, layer, a hash of the input
  bytes, precision), made from a plan and the request's image;
- both tiers (``TieredCache``: memory, then Redis when configured), with the
  integrity checks of what Redis returns (``cache_redis``: key digest, shapes, HMAC);
- the placeholder input of a hit that reads no pixels (``None`` in the work item;
  ``batch_input`` expands one shared zero tensor), and whether a hit still needs
  pixels (``reads_pixels_on_hit``);
- the write-back of a batch's misses (``write_back``), off the device in one copy.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch

from ..methods import BatchResult, CachedLayer
from .cache import CacheStats, MemoryCache, TieredCache, cache_key
from .cache_format import CachedActivation
from .host_copy import to_host

if TYPE_CHECKING:
    from ..plan import Plan
    from ..query import ImageSource
    from .batcher import WorkItem


class ActivationCache:
    """Keys, lookups, placeholders and write-back over a ``TieredCache``."""

    def __init__(self, store: TieredCache, precision: str) -> None:
        self.store = store
        self.precision = precision

    @property
    def memory(self) -> MemoryCache:
        """The in-process tier."""
        return self.store.memory

    def key(self, plan: Plan, source: ImageSource) -> str:
        """The store key of ``source``'s activation at the plan's cached layer."""
        assert plan.cache_layer is not None
        loaded = plan.model
        preprocess, image_hash = source.content_key(loaded)
        return cache_key(
            loaded.name,
            loaded.weights_digest,
            preprocess,
            plan.cache_layer,
            image_hash,
            self.precision,
        )

    def find_in_memory(self, key: str) -> CachedLayer | None:
        """The memory tier's entry for ``key``, or None (cheap: the event loop may call it)."""
        value = self.store.memory.get(key)
        return None if value is None else CachedLayer(value.activation, value.logits)

    def find(self, key: str, *, memory_missed: bool = False) -> CachedLayer | None:
        """The entry for ``key`` from either tier (Redis may block: call it off the loop);
        ``memory_missed``: the memory tier was just consulted and missed."""
        value, _ = self.store.get(key, memory=not memory_missed)
        return None if value is None else CachedLayer(value.activation, value.logits)

    @staticmethod
    def reads_pixels_on_hit(plan: Plan) -> bool:
        """Whether a hit still needs the decoded input: the method masks pixels (Score-CAM),
        faithfulness scores perturb them, or the method runs the head after the layer and
        the model's head is not known yet (the fallback substitutes the activation in a
        full forward)."""
        method = plan.method
        if method.pixels_on_cache_hit or plan.faithfulness is not None:
            return True
        layer = plan.cache_layer
        assert layer is not None
        return method.runs_head_on_cache_hit and not plan.model.primary.known_head(layer)

    @staticmethod
    def batch_input(items: list[WorkItem]) -> torch.Tensor:
        """The batch's inputs ``(N, 3, H, W)``; a hit that reads no pixels carries none and
        gets the shared zero placeholder (expanded, not copied, when every item is one)."""
        shape = items[0].group.shape
        if all(item.x is None for item in items):
            return placeholder(shape).unsqueeze(0).expand(len(items), *shape)
        return torch.stack([placeholder(shape) if item.x is None else item.x for item in items])

    def write_back(self, result: BatchResult, items: list[WorkItem]) -> None:
        """Store the activation and logits of every miss of a batch that computed them."""
        if result.activations is None or result.logits is None:
            return
        rows = [i for i, item in enumerate(items) if item.cached is None and item.cache_key]
        if not rows:
            return
        if len(rows) < len(items):  # only the misses leave the device
            index = torch.tensor(rows, device=result.activations.device)
            written = [
                result.activations.index_select(0, index),
                result.logits.index_select(0, index),
            ]
        else:
            written = [result.activations, result.logits]
        activations, logits = to_host(written)
        assert activations is not None and logits is not None
        for row, i in enumerate(rows):
            key = items[i].cache_key
            assert key is not None
            self.store.put(key, CachedActivation(activations[row], logits[row]))

    def stats(self) -> CacheStats:
        return self.store.stats()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait for queued Redis writes; ``False`` if ``timeout_s`` ran out first."""
        return self.store.flush(timeout_s)

    def close(self) -> None:
        self.store.close()


@functools.lru_cache(maxsize=16)
def placeholder(shape: tuple[int, ...]) -> torch.Tensor:
    """The input of a cache hit that reads no pixels: one shared zero tensor per shape,
    never written (a method that reads pixels on a hit is given the decoded input)."""
    return torch.zeros(shape)
