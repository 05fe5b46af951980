"""A server started with ``precision = "bfloat16"`` serves Grad-CAM; float16 on a CPU is refused."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from rpc_helpers import heatmap, request, stub, tensor_input

from camserve import tensors
from camserve_server.__main__ import main
from camserve_server.demo import INPUT_SIZE, load_demo_model
from camserve_server.errors import InvalidArgument
from camserve_server.methods import explain
from camserve_server.models import ExplainableModel
from server_harness import ServerThread, settings_for

GRADCAM_TOLERANCE = 0.05  # tests/unit/test_engine_precision.py: measured at most 0.018


@pytest.fixture(scope="module")
def bfloat16_server() -> Iterator[ServerThread]:
    thread = ServerThread(settings_for(precision="bfloat16", devices="cpu"))
    thread.start()
    yield thread
    thread.stop()


def test_bfloat16_server_answers_gradcam_close_to_float32(bfloat16_server: ServerThread) -> None:
    image = tensor_input(7)
    first = stub(bfloat16_server.address).Explain(request("demo", "gradcam", image, classes=(2,)))
    again = stub(bfloat16_server.address).Explain(request("demo", "gradcam", image, classes=(2,)))
    assert not first.cache_hit and again.cache_hit
    served = heatmap(first.heatmaps[0])
    np.testing.assert_allclose(heatmap(again.heatmaps[0]), served, atol=1e-3)

    model = ExplainableModel(load_demo_model(), input_size=INPUT_SIZE, name="demo")
    x = torch.from_numpy(np.array(tensors.from_proto(image.tensor), dtype=np.float32))[None]
    (reference,) = explain(model, "gradcam", x, targets=[2]).samples
    assert reference.heatmaps is not None
    assert served.shape == tuple(reference.heatmaps.shape[1:])
    difference = np.abs(served - reference.heatmaps[0].numpy()).max()
    assert 0 < difference <= GRADCAM_TOLERANCE  # computed in bfloat16, not in float32
    assert bfloat16_server.runtime is not None
    assert {worker.autocast for worker in bfloat16_server.runtime.workers} == {torch.bfloat16}


def test_float16_on_a_cpu_server_is_refused_at_start_up() -> None:
    thread = ServerThread(settings_for(precision="float16", devices="cpu"))
    try:
        with pytest.raises(InvalidArgument, match=r"float16 needs CUDA devices.*bfloat16"):
            thread.start()
    finally:
        thread.stop()


def test_float16_on_a_cpu_exits_the_command_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--precision", "float16", "--devices", "cpu", "--port", "0", "--metrics-port", "-1"]
    assert main(argv) == 2
    assert "precision float16 needs CUDA devices" in capsys.readouterr().err
