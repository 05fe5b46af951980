"""One device, shared in priority order: light batches get it between a heavy request's chunks."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
import torchvision

from camserve_server.errors import Unavailable
from camserve_server.methods import TargetRequest, get_method
from camserve_server.methods.chunking import between_chunks, spans
from camserve_server.models import ExplainableModel
from camserve_server.options import parse_options
from camserve_server.runtime.batcher import Batcher, GroupKey, WorkItem
from camserve_server.runtime.device_slot import DeviceSlot, Priority
from camserve_server.runtime.metrics import Metrics
from camserve_server.runtime.workers import DeviceWorker, ItemResult


def _wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.001)


def test_waiters_are_served_in_priority_order() -> None:
    slot = DeviceSlot()
    slot.acquire(Priority.LIGHT)
    order: list[Priority] = []

    def take(priority: Priority) -> None:
        with slot.hold(priority):
            order.append(priority)

    threads = []
    for priority in (Priority.BACKGROUND, Priority.HEAVY, Priority.LIGHT):
        thread = threading.Thread(target=take, args=(priority,))
        thread.start()
        threads.append(thread)
        _wait_until(lambda p=priority: slot._waiting[p] == 1)
    slot.release()
    for thread in threads:
        thread.join(timeout=10)
    assert order == [Priority.LIGHT, Priority.HEAVY, Priority.BACKGROUND]


def test_a_holder_yields_only_to_higher_priority_work() -> None:
    slot = DeviceSlot()
    slot.acquire(Priority.HEAVY)
    assert not slot.yield_to_waiting(Priority.HEAVY)  # nobody waits
    ran: list[str] = []
    background = threading.Thread(target=lambda: slot.hold(Priority.BACKGROUND).__enter__())
    background.daemon = True
    background.start()
    _wait_until(lambda: slot._waiting[Priority.BACKGROUND] == 1)
    assert not slot.yield_to_waiting(Priority.HEAVY)  # lower priority: keep going

    def light() -> None:
        with slot.hold(Priority.LIGHT):
            ran.append("light")

    thread = threading.Thread(target=light)
    thread.start()
    _wait_until(lambda: slot._waiting[Priority.LIGHT] == 1)
    assert slot.yield_to_waiting(Priority.HEAVY)
    thread.join(timeout=10)
    assert ran == ["light"]  # it ran while the heavy holder stepped aside
    slot.release()
    background.join(timeout=10)


def test_spans_calls_the_gate_between_chunks_only() -> None:
    calls: list[int] = []
    seen: list[tuple[int, int]] = []
    with between_chunks(lambda: calls.append(len(seen))):
        seen.extend(spans(10, 4))
    assert seen == [(0, 4), (4, 8), (8, 10)]
    assert calls == [1, 2]
    assert list(spans(3, 4)) == [(0, 3)]  # outside the block: no gate


@pytest.fixture(scope="module")
def model() -> ExplainableModel:
    torch.manual_seed(0)
    return ExplainableModel(
        torchvision.models.resnet18(weights=None, num_classes=10), input_size=(32, 32), name="m"
    )


def _item(method: str, layer: str | None, options: tuple[tuple[str, object], ...]) -> WorkItem:
    chosen = get_method(method)
    parsed = tuple(sorted(parse_options(method, chosen.options, dict(options)).items()))
    group = GroupKey("m", chosen, layer, parsed, (3, 32, 32))
    future = asyncio.get_running_loop().create_future()
    return WorkItem(group, torch.randn(3, 32, 32), TargetRequest(classes=(1,)), future)


def test_a_light_request_overtakes_a_heavy_one_between_chunks(model: ExplainableModel) -> None:
    asyncio.run(_light_overtakes_heavy(model))


async def _light_overtakes_heavy(model: ExplainableModel) -> None:
    batcher = Batcher(max_batch_size=8, max_delay_s=0.0, queue_size=16)
    worker = DeviceWorker(torch.device("cpu"), {"m": model}, batcher, Metrics())
    running = asyncio.create_task(worker.run())
    # 256 occluded copies, one per pass: a long request made of many chunks
    heavy = _item("occlusion", None, (("batch_size", 1), ("stride", (2, 2)), ("window", (2, 2))))
    batcher.submit(heavy)
    while not worker.slot._held:
        await asyncio.sleep(0.001)
    light = _item("gradcam", "layer4", ())
    batcher.submit(light)
    result = await asyncio.wait_for(light.future, 60)
    assert isinstance(result, ItemResult) and result.heatmaps is not None
    assert not heavy.future.done(), "the light request waited for the whole heavy one"
    assert isinstance(await asyncio.wait_for(heavy.future, 120), ItemResult)
    batcher.close()
    await running


def test_steps_run_on_the_device_with_the_worker_models(model: ExplainableModel) -> None:
    asyncio.run(_steps_run_on_the_device(model))


async def _steps_run_on_the_device(model: ExplainableModel) -> None:
    batcher = Batcher(max_batch_size=8, max_delay_s=0.0, queue_size=16)
    worker = DeviceWorker(torch.device("cpu"), {"m": model}, batcher, Metrics())
    running = asyncio.create_task(worker.run())

    def step(models: dict[str, ExplainableModel]) -> tuple[str, bool]:
        return threading.current_thread().name, worker.slot._held

    name, held = await worker.run_step(step)
    assert "steps" in name and held
    assert worker.pending == 0
    batcher.close()
    await running
    with pytest.raises(Unavailable, match="shutting down"):
        await worker.run_step(step)
