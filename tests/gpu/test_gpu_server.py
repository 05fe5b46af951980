"""A real server on a real port with its models on CUDA: out-of-memory batches split,
device memory reported, device memory back to its baseline after mixed traffic, and an
evaluation reporting what a CPU server reports."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from camserve.v1 import evaluate_pb2 as epb
from camserve.v1 import evaluate_pb2_grpc, explain_pb2_grpc
from camserve.v1 import explain_pb2 as pb
from camserve_server.demo.data import make_dataset
from camserve_server.runtime import workers
from server_harness import ServerThread, settings_for, write_test_config

pytestmark = pytest.mark.gpu

MIB = 1 << 20
# Mixed traffic: light and heavy lanes, gradients and perturbations, with small options.
MIX: list[tuple[str, dict[str, float]]] = [
    ("gradcam", {}),
    ("gradcam++", {}),
    ("scorecam", {}),
    ("saliency", {}),
    ("guided_backprop", {}),
    ("integrated_gradients", {"steps": 8}),
    ("smoothgrad", {"samples": 4}),
    ("occlusion", {"window": 16, "stride": 8}),
    ("feature_maps", {}),
]


def _picture(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _request(method: str, seed: int, options: dict[str, float]) -> pb.ExplainRequest:
    values = {name: pb.OptionValue(number=value) for name, value in options.items()}
    source = pb.ImageInput(encoded=_picture(seed))
    return pb.ExplainRequest(model="r18", method=method, input=source, options=values)


@pytest.fixture
def server(cuda: torch.device, tmp_path: Path) -> Iterator[ServerThread]:
    settings = settings_for(write_test_config(tmp_path), devices=str(cuda), max_delay_ms=50.0)
    with ServerThread(settings) as thread:
        yield thread


def _send_all(address: str, requests: list[pb.ExplainRequest], callers: int) -> list[Any]:
    with grpc.insecure_channel(address) as channel:
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        with ThreadPoolExecutor(callers) as pool:
            return list(pool.map(lambda r: stub.Explain(r, timeout=120), requests))


def _metric(thread: ServerThread, name: str, labels: dict[str, str]) -> float:
    assert thread.runtime is not None
    value = thread.runtime.metrics.registry.get_sample_value(name, labels)
    return float(value) if value is not None else 0.0


def test_an_out_of_memory_batch_splits_and_every_request_is_answered(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = workers.run_batch
    sizes: list[int] = []

    def run_batch(method: Any, batch: Any) -> Any:
        sizes.append(batch.x.shape[0])
        if batch.x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(method, batch)

    monkeypatch.setattr(workers, "run_batch", run_batch)
    requests = [_request("gradcam", seed, {}) for seed in range(8)]
    replies = _send_all(server.address, requests, callers=8)
    assert all(len(reply.heatmaps) == 1 for reply in replies)
    assert max(sizes) > 2, "the requests were batched, so the injected failure ran"
    labels = {"model": "r18", "method": "gradcam", "kind": "oom"}
    assert _metric(server, "camserve_batch_failures_total", labels) >= 1


def test_device_memory_is_reported_and_returns_to_its_baseline(
    server: ServerThread, cuda: torch.device
) -> None:
    warm_up = [_request(method, 1000 + i, options) for i, (method, options) in enumerate(MIX)]
    _send_all(server.address, warm_up, callers=4)
    reported = _metric(server, "camserve_device_memory_bytes", {"device": str(cuda)})
    assert reported > 0
    torch.cuda.synchronize(cuda)
    baseline = torch.cuda.memory_allocated(cuda)
    traffic = [_request(*_mixed(i)) for i in range(200)]
    replies = _send_all(server.address, traffic, callers=16)
    assert len(replies) == 200
    torch.cuda.synchronize(cuda)
    after = torch.cuda.memory_allocated(cuda)
    assert after <= baseline + 8 * MIB, (baseline / MIB, after / MIB)


def _mixed(index: int) -> tuple[str, int, dict[str, float]]:
    method, options = MIX[index % len(MIX)]
    return method, index, options


def _evaluation(address: str) -> Any:
    samples = make_dataset(6, seed=21)
    request = epb.EvaluateRequest(
        model="demo",
        methods=["gradcam", "saliency", "occlusion"],
        images=[pb.ImageInput(encoded=_png(s.image)) for s in samples],
        metrics=["deletion", "insertion", "road_morf"],
        sanity_check=True,
        sanity_stages=2,
        include_random=True,
        method_options={
            "occlusion": epb.MethodOptions(
                options={"window": pb.OptionValue(number=12), "stride": pb.OptionValue(number=4)}
            )
        },
    )
    with grpc.insecure_channel(address) as channel:
        stream = evaluate_pb2_grpc.EvaluateServiceStub(channel).Evaluate(request, timeout=600)
        return next(event.report for event in stream if event.WhichOneof("event") == "report")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_evaluation_on_cuda_reports_what_the_cpu_reports(
    server: ServerThread, tmp_path: Path
) -> None:
    """Scores, the sanity curves (the randomised copy lives on the device) and the random
    maps' scores agree with a CPU server's."""
    on_cuda = _evaluation(server.address)
    cpu_settings = settings_for(write_test_config(tmp_path), devices="cpu")
    with ServerThread(cpu_settings) as cpu:
        on_cpu = _evaluation(cpu.address)
    assert list(on_cuda.targets) == list(on_cpu.targets)
    for gpu_method, cpu_method in zip(on_cuda.methods, on_cpu.methods, strict=True):
        assert gpu_method.method == cpu_method.method
        for name, summary in gpu_method.scores.items():
            expected = np.array(cpu_method.scores[name].values)
            assert np.allclose(summary.values, expected, atol=2e-3), (gpu_method.method, name)
        if cpu_method.HasField("sanity"):
            curve = [s.correlation.mean for s in gpu_method.sanity.stages]
            expected_curve = [s.correlation.mean for s in cpu_method.sanity.stages]
            assert np.allclose(curve, expected_curve, atol=2e-2), gpu_method.method
