"""Cache-hit batches run only the head: on the calling thread, from one shared placeholder."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import torch
import torchvision

from camserve_server.methods import CachedLayer, TargetRequest, explain, get_method
from camserve_server.models import ExplainableModel
from camserve_server.runtime import workers
from camserve_server.runtime.activation_cache import ActivationCache, placeholder
from camserve_server.runtime.batcher import Batcher, GroupKey, WorkItem
from camserve_server.runtime.intra_op import intra_op_threads, team_size
from camserve_server.runtime.metrics import Metrics
from camserve_server.runtime.workers import DeviceWorker, ItemResult

SIZE = 32


@pytest.fixture(scope="module")
def model() -> ExplainableModel:
    torch.manual_seed(0)
    return ExplainableModel(
        torchvision.models.resnet18(weights=None, num_classes=10), input_size=(SIZE, SIZE), name="m"
    )


def _in_new_thread(fn: Any) -> Any:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join(timeout=30)
    return result[0]


def test_the_thread_count_is_set_for_the_block_and_the_team_size_left_behind() -> None:
    team = team_size()

    def run() -> list[int]:
        seen = []
        with intra_op_threads(1, after=team):
            seen.append(torch.get_num_threads())
            torch.ones(1 << 16).mul_(2)  # an op that may use the team
            # a thread that starts computing now would start with one thread ...
        seen.append(torch.get_num_threads())
        return seen

    assert _in_new_thread(run) == [1, team]
    # ... but once the block is left, a new thread starts with the team again.
    assert _in_new_thread(torch.get_num_threads) == team


def _items(
    loop: asyncio.AbstractEventLoop,
    method: str,
    xs: list[torch.Tensor | None],
    cached: list[CachedLayer | None],
) -> list[WorkItem]:
    group = GroupKey("m", get_method(method), "layer4", (), (3, SIZE, SIZE))
    return [
        WorkItem(group, x, TargetRequest(classes=(1,)), loop.create_future(), cached=c)
        for x, c in zip(xs, cached, strict=True)
    ]


def _thread_counts(
    worker: DeviceWorker, monkeypatch: pytest.MonkeyPatch, items: list[WorkItem]
) -> tuple[list[int], list[Any]]:
    """The intra-op thread count the batch ran with, and the worker's outcomes."""
    counts: list[int] = []
    real = workers.run_batch

    def spy(*args: Any) -> Any:
        counts.append(torch.get_num_threads())
        return real(*args)

    monkeypatch.setattr(workers, "run_batch", spy)
    return counts, worker.compute(items)


def test_a_batch_of_cache_hits_runs_without_the_thread_team(
    model: ExplainableModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = torch.randn(2, 3, SIZE, SIZE)
    fresh = explain(model, "gradcam", x, targets=[1, 1], layer="layer4")
    assert fresh.activations is not None and fresh.logits is not None
    hits: list[CachedLayer | None] = [
        CachedLayer(fresh.activations[i].clone(), fresh.logits[i].clone()) for i in range(2)
    ]
    batcher = Batcher(max_batch_size=8, max_delay_s=0.0, queue_size=16)
    worker = DeviceWorker(torch.device("cpu"), {"m": model}, batcher, Metrics())
    loop = asyncio.new_event_loop()
    try:
        team = torch.get_num_threads()
        counts, outcomes = _thread_counts(
            worker, monkeypatch, _items(loop, "gradcam", [None, None], hits)
        )
        assert counts == [1]
        assert torch.get_num_threads() == team
        for outcome, sample in zip(outcomes, fresh.samples, strict=True):
            assert isinstance(outcome, ItemResult) and outcome.heatmaps is not None
            assert sample.heatmaps is not None
            torch.testing.assert_close(outcome.heatmaps, sample.heatmaps, atol=1e-5, rtol=0)
        torch.set_num_threads(1)  # as if this thread had started during a head-only batch
        try:
            counts, _ = _thread_counts(
                worker, monkeypatch, _items(loop, "gradcam", [x[0], None], [None, hits[1]])
            )
        finally:
            torch.set_num_threads(team)
        assert counts == [team], "a batch with a miss runs the backbone: it gets the team"
    finally:
        loop.close()


def test_cache_hits_sharing_the_placeholder_are_expanded_not_copied() -> None:
    loop = asyncio.new_event_loop()
    try:
        shared_zeros = placeholder((3, SIZE, SIZE))
        entry = CachedLayer(torch.zeros(4, 2, 2), torch.zeros(10))
        shared = ActivationCache.batch_input(
            _items(loop, "gradcam", [None] * 3, [entry, entry, entry])
        )
        assert shared.shape == (3, 3, SIZE, SIZE)
        assert shared.stride(0) == 0 and shared.data_ptr() == shared_zeros.data_ptr()
        mixed = ActivationCache.batch_input(
            _items(loop, "gradcam", [None, torch.ones(3, SIZE, SIZE)], [entry, None])
        )
        assert mixed.stride(0) != 0 and mixed[1].eq(1).all()
    finally:
        loop.close()
