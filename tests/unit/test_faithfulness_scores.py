"""What the faithfulness scores say and cost, in the engine and a device worker: Grad-CAM's
maps of the demo model are more faithful than random maps; a score depends neither on its
batch nor on its chunks; several targets give one value each; the forward passes are the
ones BENCHMARKS.md counts; the work stops between chunks; the request's checks."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch
from engine_models import rows_through
from faithfulness_rows import demo_images, demo_model, gradcam_maps, random_maps

from camserve_server.errors import InvalidArgument
from camserve_server.faithfulness import (
    SCORE_NAMES,
    Faithfulness,
    add_faithfulness,
    faithfulness_request,
    score_maps,
)
from camserve_server.methods import TargetRequest, explain, get_method
from camserve_server.methods.chunking import between_chunks
from camserve_server.runtime.batcher import Batcher, GroupKey, WorkItem
from camserve_server.runtime.metrics import FAITHFULNESS_SCORE, SCORE_BUCKETS, Metrics
from camserve_server.runtime.workers import DeviceWorker, ItemResult

ALL = Faithfulness(SCORE_NAMES)


def test_gradcam_is_more_faithful_than_a_random_map() -> None:
    x, classes = demo_images(12)
    request = Faithfulness(("deletion", "insertion"))
    gradcam = score_maps(request, demo_model(), x, classes, gradcam_maps(x, classes))
    random = score_maps(request, demo_model(), x, classes, random_maps(12))
    assert float(gradcam["deletion"].mean()) < float(random["deletion"].mean())
    assert float(gradcam["insertion"].mean()) > float(random["insertion"].mean())


def test_every_score_is_in_its_range() -> None:
    x, classes = demo_images(3)
    scores = score_maps(ALL, demo_model(), x, classes, gradcam_maps(x, classes))
    for name in ("deletion", "insertion", "drop_in_confidence"):
        assert bool(((scores[name] >= 0) & (scores[name] <= 1)).all()), name
    assert set(scores["increase_in_confidence"].tolist()) <= {0.0, 1.0}
    for name in ("road_morf", "road_lerf"):
        assert bool((scores[name].abs() <= 1).all()), name


def test_a_score_depends_neither_on_its_batch_nor_on_its_chunks() -> None:
    x, classes = demo_images(3)
    maps = gradcam_maps(x, classes)
    together = score_maps(ALL, demo_model(), x, classes, maps)
    model = demo_model()
    budget = model.memory_budget_bytes
    model.memory_budget_bytes = 7 * model.structure.activation_bytes  # chunks of 7 inputs
    try:
        for i in range(3):
            alone = score_maps(ALL, model, x[i : i + 1], classes[i : i + 1], maps[i : i + 1])
            for name in SCORE_NAMES:
                assert abs(float(alone[name][0]) - float(together[name][i])) <= 1e-5, name
    finally:
        model.memory_budget_bytes = budget


def test_several_targets_get_one_value_each() -> None:
    x, _ = demo_images(2)
    model = demo_model()
    result = explain(model, "gradcam", x, top_k=2)
    request = Faithfulness(("deletion", "road_morf"))
    add_faithfulness(request, model, x, result.samples, logits_in_float32=True)
    for i, sample in enumerate(result.samples):
        assert sample.heatmaps is not None
        assert list(sample.metrics) == ["deletion", "road_morf"]
        one = score_maps(request, model, x[[i, i]], sample.targets, sample.heatmaps)
        for name in request.scores:
            assert sample.metrics[name].shape == (2,)
            assert torch.allclose(sample.metrics[name], one[name], atol=1e-5), name


def _inputs_run(request: Faithfulness, images: int, *, float32_logits: bool = True) -> int:
    x, _ = demo_images(images)
    model = demo_model()
    result = explain(model, "gradcam", x, top_k=2)
    with rows_through(model.module) as sizes:
        passes = add_faithfulness(
            request, model, x, result.samples, logits_in_float32=float32_logits
        )
    assert sum(sizes) == passes
    return passes


@pytest.mark.parametrize("steps", [20, 7, 256])
def test_deletion_and_insertion_cost_the_counted_passes(steps: int) -> None:
    points = math.ceil(64 * 64 / math.ceil(64 * 64 / steps))  # counts before the last, P
    interior = points - 1
    rows = 2 * 2  # two images, two targets each
    assert _inputs_run(Faithfulness(("deletion",), steps=steps), 2) == 1 + rows * interior
    both = Faithfulness(("deletion", "insertion"), steps=steps)
    assert _inputs_run(both, 2) == 1 + rows * 2 * interior
    if steps == 20:
        assert interior == steps - 1


def test_the_other_scores_cost_one_pass_per_map() -> None:
    rows = 2 * 2
    confidence = Faithfulness(("drop_in_confidence", "increase_in_confidence"))
    assert _inputs_run(confidence, 2) == rows
    assert _inputs_run(Faithfulness(("road_morf",)), 2) == rows
    assert _inputs_run(Faithfulness(("road_morf", "road_lerf")), 2) == 2 * rows
    # under autocast, the clean inputs run again in float32: one pass per image
    assert _inputs_run(Faithfulness(("road_morf",)), 2, float32_logits=False) == rows + 2


def test_the_work_stops_between_chunks() -> None:
    x, classes = demo_images(1)
    maps = gradcam_maps(x, classes)
    request = Faithfulness(("deletion", "insertion"), steps=256)  # 511 inputs: two chunks
    gates: list[int] = []

    def stop() -> None:
        gates.append(1)
        raise RuntimeError("nobody waits")

    with between_chunks(stop), pytest.raises(RuntimeError, match="nobody waits"):
        score_maps(request, demo_model(), x, classes, maps)
    assert gates == [1]


def test_a_constant_map_has_finite_scores() -> None:
    x, classes = demo_images(1)
    scores = score_maps(ALL, demo_model(), x, classes, torch.zeros(1, 64, 64))
    for name in SCORE_NAMES:
        assert math.isfinite(float(scores[name][0])), name


def test_an_unknown_score_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(InvalidArgument) as caught:
        faithfulness_request(["deletion", "auc"])
    message = str(caught.value)
    assert "'auc'" in message
    assert "valid scores: " + ", ".join(SCORE_NAMES) in message


@pytest.mark.parametrize(
    ("steps", "percentile", "named"),
    [
        (1, 0, "faithfulness_options.steps must be in [2, 256]"),
        (257, 0, "faithfulness_options.steps must be in [2, 256]"),
        (-3, 0, "faithfulness_options.steps must be in [2, 256]"),
        (0, 100, "faithfulness_options.percentile must be in [1, 99]"),
        (0, -1, "faithfulness_options.percentile must be in [1, 99]"),
    ],
)
def test_the_settings_are_bounded(steps: int, percentile: int, named: str) -> None:
    with pytest.raises(InvalidArgument, match=named.replace("[", r"\[")):
        faithfulness_request(["deletion"], steps, percentile)


def test_the_request_keeps_each_name_once_and_its_defaults() -> None:
    assert faithfulness_request([]) is None
    request = faithfulness_request(["insertion", "deletion", "insertion"])
    assert request == Faithfulness(("insertion", "deletion"), steps=20, percentile=80)
    assert faithfulness_request(["road_lerf"], 2, 99) == Faithfulness(("road_lerf",), 2, 99)


def test_scores_join_the_heavy_lane_and_split_batches() -> None:
    gradcam = get_method("gradcam")
    plain = GroupKey("demo", gradcam, "features", (), (3, 64, 64))
    scored = GroupKey("demo", gradcam, "features", (), (3, 64, 64), Faithfulness(("deletion",)))
    other = GroupKey("demo", gradcam, "features", (), (3, 64, 64), Faithfulness(("insertion",)))
    assert not plain.heavy and scored.heavy
    assert len({plain, scored, other}) == 3


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_a_worker_adds_the_scores_in_float32_and_records_them(
    autocast: torch.dtype | None,
) -> None:
    asyncio.run(_worker_scores(autocast))


async def _worker_scores(autocast: torch.dtype | None) -> None:
    model = demo_model()
    metrics = Metrics()
    batcher = Batcher(max_batch_size=8, max_delay_s=0.0, queue_size=16)
    worker = DeviceWorker(torch.device("cpu"), {"demo": model}, batcher, metrics, autocast=autocast)
    running = asyncio.create_task(worker.run())
    x, classes = demo_images(1)
    request = Faithfulness(("deletion", "drop_in_confidence"), steps=10)
    group = GroupKey("demo", get_method("gradcam"), model.default_layer, (), (3, 64, 64), request)
    future: asyncio.Future[ItemResult] = asyncio.get_running_loop().create_future()
    target = TargetRequest(classes=(int(classes[0]), (int(classes[0]) + 1) % 6))
    batcher.submit(WorkItem(group, x[0], target, future))
    result = await asyncio.wait_for(future, 60)
    batcher.close()
    await running
    assert set(result.metrics) == {"deletion", "drop_in_confidence"}
    assert all(len(values) == 2 for values in result.metrics.values())
    # the scores of the answer's own maps, computed in float32 whatever the precision
    assert result.heatmaps is not None
    classes_asked = torch.tensor(target.classes)
    expected = score_maps(request, model, x[[0, 0]], classes_asked, result.heatmaps)
    for name in request.scores:
        assert torch.allclose(torch.tensor(result.metrics[name]), expected[name], atol=1e-5)
    labels = {"model": "demo", "method": "gradcam", "score": "deletion"}
    registry = metrics.registry
    assert registry.get_sample_value(FAITHFULNESS_SCORE + "_count", labels) == 2
    for bound in SCORE_BUCKETS:  # cumulative counts: a histogram with negative bounds has no sum
        below = sum(value <= bound for value in result.metrics["deletion"])
        found = registry.get_sample_value(
            FAITHFULNESS_SCORE + "_bucket", {**labels, "le": str(float(bound))}
        )
        assert found == below, bound
