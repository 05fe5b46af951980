"""Concurrent callers share batches; a second question about an image skips the backbone."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch
from rpc_helpers import metric_value, random_image, request, stub, tensor_input

from camserve.v1 import explain_pb2 as pb
from camserve_server.runtime.device_slot import Priority
from server_harness import ServerThread


def test_concurrent_callers_are_batched(server: ServerThread) -> None:
    assert server.runtime is not None
    registry = server.runtime.metrics.registry
    labels = {"model": "r18", "method": "hirescam"}
    count_before = metric_value(registry, "camserve_batch_size_count", labels)
    sum_before = metric_value(registry, "camserve_batch_size_sum", labels)
    client = stub(server.address)
    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(
            pool.map(
                lambda i: client.Explain(request("r18", "hirescam", tensor_input(100 + i))),
                range(32),
            )
        )
    assert len(replies) == 32
    batches = metric_value(registry, "camserve_batch_size_count", labels) - count_before
    requests = metric_value(registry, "camserve_batch_size_sum", labels) - sum_before
    assert requests == 32
    assert requests / batches > 1, "concurrent callers should share batches"


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize(("model", "first_layer"), [("r18", "conv1"), ("mnv3", "features.0")])
def test_cache_hit_skips_the_backbone(server: ServerThread, model: str, first_layer: str) -> None:
    assert server.runtime is not None
    stem = server.runtime.models[model].primary.module.get_submodule(first_layer)
    calls = _count_calls(stem)
    try:
        client = stub(server.address)
        image = random_image(len(model) * 31, (64, 64))
        first = client.Explain(request(model, "gradcam", image, classes=(1,)))
        assert not first.cache_hit
        assert calls[0] == 1
        for method, target in (
            ("gradcam", 2),
            ("gradcam++", 1),
            ("ablationcam", 3),
            ("eigencam", 0),
        ):
            again = client.Explain(request(model, method, image, classes=(target,)))
            assert again.cache_hit, method
        assert calls[0] == 1, "a cached activation must not run the layers before it"
        # Score-CAM runs the model on masked inputs by definition, but not on the image.
        assert client.Explain(request(model, "scorecam", image, classes=(2,))).cache_hit
    finally:
        stem._forward_hooks.clear()


@pytest.mark.parametrize("kind", ["encoded", "tensor"])
def test_cached_answer_equals_the_uncached_one(server: ServerThread, kind: str) -> None:
    """Also for a tensor, whose hit is served from a placeholder without re-validation."""
    client = stub(server.address)
    image = random_image(77, (64, 64)) if kind == "encoded" else tensor_input(77, size=48)
    cold = client.Explain(request("r18", "gradcam", image, classes=(4,)))
    warm = client.Explain(request("r18", "gradcam++", image, classes=(4,)))
    again = client.Explain(request("r18", "gradcam", image, classes=(4,)))
    assert not cold.cache_hit and warm.cache_hit and again.cache_hit
    assert cold.heatmaps[0].map.data == again.heatmaps[0].map.data
    assert cold.heatmaps[0].map.shape == warm.heatmaps[0].map.shape
    assert (cold.image_height, cold.image_width) == (again.image_height, again.image_width)
    assert [c.index for c in cold.top_classes] == [c.index for c in again.top_classes]


def test_cache_metrics_count_hits_and_misses(server: ServerThread) -> None:
    assert server.runtime is not None
    registry = server.runtime.metrics.registry
    hits = metric_value(registry, "camserve_cache_hits_total", {"tier": "memory"})
    client = stub(server.address)
    image = pb.ImageInput(encoded=random_image(78, (64, 64)))
    client.Explain(pb.ExplainRequest(model="r18", method="layercam", input=image))
    client.Explain(pb.ExplainRequest(model="r18", method="xgradcam", input=image))
    assert metric_value(registry, "camserve_cache_hits_total", {"tier": "memory"}) == hits + 1


def test_a_light_request_is_not_stuck_behind_a_heavy_one(server: ServerThread) -> None:
    """A Grad-CAM sent while a long occlusion runs is answered between its chunks."""
    assert server.runtime is not None
    slot = server.runtime.workers[0].slot
    client = stub(server.address)
    options = {"window": [4, 4], "stride": [4, 4], "batch_size": 1}  # 256 passes of one image
    heavy = client.Explain.future(request("r18", "occlusion", tensor_input(7), options=options))
    deadline = time.monotonic() + 30
    while not slot.waiting_above(Priority.BACKGROUND) and not slot._held:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    light = client.Explain(request("r18", "gradcam", tensor_input(8)))
    assert len(light.heatmaps) == 1
    assert not heavy.done(), "the Grad-CAM request waited for the whole occlusion"
    assert len(heavy.result(timeout=120).heatmaps) == 1


class _CountingPool:
    """Wraps the service's decode pool and counts what is sent to it."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.calls = 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.pool.submit(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)


def test_a_memory_hit_on_a_small_image_is_looked_up_without_the_decode_pool(
    server: ServerThread,
) -> None:
    """A small JPEG is hashed and found on the event loop; a miss is counted once."""
    assert server.runtime is not None
    service = server.runtime.service
    registry = server.runtime.metrics.registry
    misses = metric_value(registry, "camserve_cache_misses_total", {"tier": "memory"})
    client = stub(server.address)
    image = random_image(79, (64, 64))
    counting = _CountingPool(service._pool)
    service._pool = counting  # type: ignore[assignment]
    try:
        cold = client.Explain(request("r18", "gradcam", image, classes=(1,)))
        assert counting.calls == 1, "a miss decodes in the pool"
        warm = client.Explain(request("r18", "gradcam++", image, classes=(2,)))
        assert counting.calls == 1, "a memory hit needs no thread hop"
        tensor = client.Explain(request("r18", "gradcam", tensor_input(79), classes=(1,)))
    finally:
        service._pool = counting.pool
    assert not cold.cache_hit and warm.cache_hit and not tensor.cache_hit
    assert counting.calls == 2, "a tensor is hashed in the pool"
    after = metric_value(registry, "camserve_cache_misses_total", {"tier": "memory"})
    assert after == misses + 2, "each miss is counted once"
