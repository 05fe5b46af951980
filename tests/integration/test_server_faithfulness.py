"""Faithfulness scores through a real server: every score on the wire, equal to the
engine's on the same input; one value per target; cache hits score the real pixels;
refusals by name; the histogram; the SDK (both clients) and the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from rpc_helpers import random_image, request, stub

from camserve import AsyncExplainClient, ExplainClient
from camserve import tensors as wire
from camserve.cli import main
from camserve.v1 import explain_pb2 as pb
from camserve_server.demo import INPUT_SIZE, SAMPLES_DIR, load_demo_model, preprocess
from camserve_server.demo.data import make_dataset
from camserve_server.faithfulness import SCORE_NAMES, Faithfulness, add_faithfulness
from camserve_server.methods import explain
from camserve_server.models import ExplainableModel
from camserve_server.runtime.metrics import FAITHFULNESS_SCORE
from server_harness import ServerThread

SAMPLES = sorted(SAMPLES_DIR.glob("*.png"))


def scored(
    query: pb.ExplainRequest, names: list[str], steps: int = 0, percentile: int = 0
) -> pb.ExplainRequest:
    query.faithfulness.extend(names)
    query.faithfulness_options.steps = steps
    query.faithfulness_options.percentile = percentile
    return query


def _refusal(server: ServerThread, query: pb.ExplainRequest) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        stub(server.address).Explain(query, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return str(caught.value.details())


def test_every_score_comes_back_in_the_metrics(server: ServerThread) -> None:
    query = scored(request("demo", "gradcam", SAMPLES[0].read_bytes()), list(SCORE_NAMES))
    reply = stub(server.address).Explain(query, timeout=120)
    assert set(reply.metrics) == set(SCORE_NAMES)
    for name in ("deletion", "insertion", "drop_in_confidence"):
        assert 0 <= reply.metrics[name] <= 1, name
    assert reply.metrics["increase_in_confidence"] in (0.0, 1.0)
    assert -1 <= reply.metrics["road_morf"] <= 1 and -1 <= reply.metrics["road_lerf"] <= 1


def test_the_wire_scores_are_the_engines(server: ServerThread) -> None:
    sample = make_dataset(1, seed=99)[0]
    x = preprocess(sample.image)
    source = pb.ImageInput(tensor=wire.to_proto(x.numpy()))
    names = ["deletion", "insertion", "drop_in_confidence", "road_morf", "road_lerf"]
    query = scored(request("demo", "gradcam", source, classes=(sample.label,)), names, 10, 70)
    reply = stub(server.address).Explain(query, timeout=120)
    model = ExplainableModel(load_demo_model(), input_size=INPUT_SIZE, name="demo")
    result = explain(model, "gradcam", x[None], targets=[sample.label])
    add_faithfulness(
        Faithfulness(tuple(names), 10, 70), model, x[None], result.samples, logits_in_float32=True
    )
    for name in names:
        expected = float(result.samples[0].metrics[name][0])
        assert abs(reply.metrics[name] - expected) <= 1e-4, name


def test_several_targets_get_one_entry_each(server: ServerThread) -> None:
    query = scored(request("demo", "gradcam", SAMPLES[1].read_bytes(), top_k=3),
                   ["deletion", "road_lerf"], steps=8)  # fmt: skip
    reply = stub(server.address).Explain(query, timeout=120)
    targets = [h.target for h in reply.heatmaps]
    assert len(targets) == 3
    assert set(reply.metrics) == {f"{n}/{t}" for n in ("deletion", "road_lerf") for t in targets}


def test_a_cache_hit_scores_the_real_pixels(server: ServerThread) -> None:
    image = random_image(501, (64, 64))
    query = scored(request("demo", "gradcam", image), ["deletion", "drop_in_confidence"], 10)
    cold = stub(server.address).Explain(query, timeout=120)
    warm = stub(server.address).Explain(query, timeout=120)
    assert not cold.cache_hit and warm.cache_hit
    for name in ("deletion", "drop_in_confidence"):
        assert abs(cold.metrics[name] - warm.metrics[name]) <= 1e-5, name


def test_an_unknown_score_is_refused_naming_the_valid_ones(server: ServerThread) -> None:
    query = scored(request("demo", "gradcam", SAMPLES[0].read_bytes()), ["deletion", "auc"])
    details = _refusal(server, query)
    assert "'auc'" in details and "valid scores: " + ", ".join(SCORE_NAMES) in details


@pytest.mark.parametrize("method", ["embedding", "feature_maps", "channel_profile"])
def test_a_method_without_maps_per_target_refuses_scores(server: ServerThread, method: str) -> None:
    query = scored(request("demo", method, SAMPLES[0].read_bytes()), ["deletion"])
    assert f"method {method!r} makes no map per target class" in _refusal(server, query)


def test_settings_out_of_range_are_refused(server: ServerThread) -> None:
    image = SAMPLES[0].read_bytes()
    steps = scored(request("demo", "gradcam", image), ["deletion"], steps=1000)
    assert "faithfulness_options.steps must be in [2, 256]" in _refusal(server, steps)
    percentile = scored(request("demo", "gradcam", image), ["road_morf"], percentile=100)
    assert "faithfulness_options.percentile must be in [1, 99]" in _refusal(server, percentile)


def test_the_scores_are_recorded_by_model_method_and_score(server: ServerThread) -> None:
    assert server.runtime is not None
    registry = server.runtime.metrics.registry
    labels = {"model": "demo", "method": "saliency", "score": "insertion"}
    before = registry.get_sample_value(FAITHFULNESS_SCORE + "_count", labels) or 0.0
    query = scored(request("demo", "saliency", SAMPLES[2].read_bytes(), top_k=2), ["insertion"])
    stub(server.address).Explain(query, timeout=120)
    assert registry.get_sample_value(FAITHFULNESS_SCORE + "_count", labels) == before + 2


def test_both_clients_ask_for_scores(server: ServerThread) -> None:
    with ExplainClient(server.address, timeout=120) as client:
        ex = client.explain(SAMPLES[3], model="demo", faithfulness=["deletion", "insertion"],
                            faithfulness_steps=10)  # fmt: skip
        many = client.explain_many(SAMPLES[:2], model="demo", faithfulness=["road_morf"])
    assert set(ex.metrics) == {"deletion", "insertion"}
    assert all(set(one.metrics) == {"road_morf"} for one in many)

    async def asynchronous() -> dict[str, float]:
        async with AsyncExplainClient(server.address, timeout=120) as client:
            found = await client.explain(SAMPLES[3], model="demo", faithfulness=["deletion"],
                                         faithfulness_steps=10)  # fmt: skip
            return found.metrics

    metrics = asyncio.run(asynchronous())
    assert metrics["deletion"] == pytest.approx(ex.metrics["deletion"], abs=1e-5)


def test_the_cli_prints_the_scores(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--server", server.address, "explain", str(SAMPLES[0]), "--model", "demo",
                 "--out", str(tmp_path), "--faithfulness", "deletion,insertion"])  # fmt: skip
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    words = line.split()
    for name in ("deletion", "insertion"):
        assert 0 <= float(words[words.index(name) + 1]) <= 1
