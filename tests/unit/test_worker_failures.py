"""A failure inside a batch fails only the requests it must; the worker keeps going."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch
import torchvision

from camserve_server.errors import InternalError, InvalidArgument, Overloaded
from camserve_server.methods import Method, TargetRequest, get_method
from camserve_server.methods.base import BatchInput
from camserve_server.models import ExplainableModel
from camserve_server.runtime import workers
from camserve_server.runtime.batcher import Batcher, GroupKey, WorkItem
from camserve_server.runtime.metrics import Metrics
from camserve_server.runtime.workers import DeviceWorker, ItemResult


@pytest.fixture(scope="module")
def model() -> ExplainableModel:
    torch.manual_seed(0)
    return ExplainableModel(
        torchvision.models.resnet18(weights=None, num_classes=10), input_size=(32, 32), name="m"
    )


def _worker(model: ExplainableModel) -> DeviceWorker:
    batcher = Batcher(max_batch_size=8, max_delay_s=0.0, queue_size=16)
    return DeviceWorker(torch.device("cpu"), {"m": model}, batcher, Metrics())


def _items(n: int, loop: asyncio.AbstractEventLoop) -> list[WorkItem]:
    group = GroupKey("m", get_method("gradcam"), "layer4", (), (3, 32, 32))
    return [
        WorkItem(group, torch.randn(3, 32, 32), TargetRequest(classes=(i,)), loop.create_future())
        for i in range(n)
    ]


def test_out_of_memory_splits_the_batch(
    model: ExplainableModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = workers.run_batch
    sizes: list[int] = []

    def run_batch(method: Method, batch: BatchInput) -> Any:
        sizes.append(batch.x.shape[0])
        if batch.x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(method, batch)

    monkeypatch.setattr(workers, "run_batch", run_batch)
    loop = asyncio.new_event_loop()
    outcomes = _worker(model).compute(_items(8, loop))
    loop.close()
    assert all(isinstance(o, ItemResult) for o in outcomes)
    assert [o.targets for o in outcomes if isinstance(o, ItemResult)] == [[i] for i in range(8)]
    assert sizes[0] == 8 and max(sizes[1:]) <= 4 and sizes.count(2) == 4


def test_a_single_request_out_of_memory_is_overloaded(
    model: ExplainableModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run_batch(*_args: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(workers, "run_batch", run_batch)
    loop = asyncio.new_event_loop()
    outcomes = _worker(model).compute(_items(1, loop))
    loop.close()
    assert isinstance(outcomes[0], Overloaded)


@pytest.mark.parametrize("failure", [InvalidArgument("bad target"), RuntimeError("boom")])
def test_a_failing_request_fails_alone(
    model: ExplainableModel, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    real = workers.run_batch

    def run_batch(method: Method, batch: BatchInput) -> Any:
        if any(t.classes == (3,) for t in batch.targets):
            raise failure
        return real(method, batch)

    monkeypatch.setattr(workers, "run_batch", run_batch)
    loop = asyncio.new_event_loop()
    outcomes = _worker(model).compute(_items(5, loop))
    loop.close()
    failed = [i for i, o in enumerate(outcomes) if not isinstance(o, ItemResult)]
    assert failed == [3]
    expected = InvalidArgument if isinstance(failure, InvalidArgument) else InternalError
    assert isinstance(outcomes[3], expected)
    if expected is InternalError:
        assert "boom" not in str(outcomes[3])  # the caller never sees internals
