"""The harness's parts measure what they claim: tensor inputs are the preprocessed image,
duration and request modes are exclusive, and the harness's own onnxruntime occlusion
and Grad-CAM reproduce the engine's maps (no timing is checked)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import inputs, loadgen, onnx_runtime, precision
from camserve import tensors
from camserve_server.demo import INPUT_SIZE, MEAN, STD, load_demo_model
from camserve_server.methods.engine import explain
from camserve_server.models import ExplainableModel
from camserve_server.models.imaging import Preprocess, decode_image

PREPROCESS = Preprocess(input_size=INPUT_SIZE, mean=MEAN, std=STD)


def _demo_inputs(count: int) -> torch.Tensor:
    images = inputs.jpeg_images(count, INPUT_SIZE[0], seed=3)
    return torch.stack([PREPROCESS(decode_image(data))[0] for data in images])


def test_tensor_input_carries_the_preprocessed_image() -> None:
    (jpeg,) = inputs.jpeg_images(1, 64, seed=0)
    message = inputs.image_input(jpeg, "tensor", PREPROCESS)
    assert message.WhichOneof("source") == "tensor"
    expected = PREPROCESS(decode_image(jpeg))[0].numpy()
    np.testing.assert_array_equal(tensors.from_proto(message.tensor), expected)
    assert inputs.image_input(jpeg, "jpeg", PREPROCESS).encoded == jpeg


def test_fresh_inputs_make_new_distinct_images_once_the_pool_is_spent() -> None:
    pool = inputs.image_inputs(inputs.jpeg_images(2, 64, seed=0), "jpeg", PREPROCESS)
    fresh = inputs.FreshInputs(pool, "jpeg", PREPROCESS, 64)
    taken = [next(fresh).encoded for _ in range(5)]
    assert len(set(taken)) == 5
    assert fresh.made_during_run == 3


@pytest.mark.parametrize(("requests", "duration"), [(None, None), (4, 1.0), (None, 0.0)])
def test_load_needs_exactly_one_positive_budget(
    requests: int | None, duration: float | None
) -> None:
    with pytest.raises(ValueError, match=r"duration_s|requests"):
        asyncio.run(
            loadgen.run_load(
                "127.0.0.1:1",
                "demo",
                ["gradcam"],
                [],
                concurrency=1,
                requests=requests,
                duration_s=duration,
            )
        )


def test_onnxruntime_occlusion_loop_reproduces_the_engine(tmp_path: Path) -> None:
    module = load_demo_model()
    x = _demo_inputs(1)
    session = onnx_runtime.session(onnx_runtime.export(module, INPUT_SIZE[0], tmp_path), 1)
    _, (loop_map,) = onnx_runtime.occlusion_seconds(session, [x[0]], 16, 8, chunk=7)
    model = ExplainableModel(load_demo_model(), input_size=INPUT_SIZE)
    engine = explain(model, "occlusion", x, options={"window": 16, "stride": 8})
    heatmaps = engine.samples[0].heatmaps
    assert heatmaps is not None
    engine_map = heatmaps[0].numpy()
    assert loop_map.shape == engine_map.shape
    assert float(np.abs(loop_map - engine_map).max()) < 1e-4


def test_harness_gradcam_matches_the_engine_and_bfloat16_stays_close() -> None:
    x = _demo_inputs(3)
    model = ExplainableModel(load_demo_model(), input_size=INPUT_SIZE)
    layer = model.default_layer
    engine = explain(model, "gradcam", x, layer=layer)
    engine_maps = torch.stack([precision._first_heatmap(sample) for sample in engine.samples])
    float32, _, bfloat16, _ = precision.CPU_VARIANTS
    ours = precision.gradcam(load_demo_model(), layer, x, float32)
    assert float((ours - engine_maps).abs().max()) < 1e-5
    low = precision.gradcam(load_demo_model(), layer, x, bfloat16)
    assert low.dtype == torch.float32 and float(low.min()) >= 0 and float(low.max()) <= 1
    assert float((low - engine_maps).abs().mean()) < 0.1


@pytest.mark.slow
def test_the_front_end_probe_drives_a_running_server(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m bench.frontend`` against a server it did not start (the demo model)."""
    import json

    from bench import frontend
    from camserve_server.inprocess import ServerThread
    from server_harness import settings_for

    with ServerThread(settings_for()) as server:
        code = frontend.main(
            ["--address", server.address, "--size", "64", "--images", "2", "--clients", "1",
             "--concurrency", "2", "--duration", "0.5"]
        )  # fmt: skip
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["noop_rps"] > 0 and figures["warm_rps"] > 0
    assert figures["noop_errors"] == figures["warm_errors"] == 0
    assert figures["warm_cache_hit_rate"] == 1.0
