"""A TorchScript model serves the methods that need no layer access, and says so."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import torch
from rpc_helpers import request, stub, tensor_input

from camserve.v1 import explain_pb2 as pb
from server_harness import ServerThread, settings_for


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
        return logits


@pytest.fixture(scope="module")
def scripted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    folder = tmp_path_factory.mktemp("torchscript")
    torch.manual_seed(0)
    torch.jit.script(Tiny()).save(str(folder / "tiny.pt"))  # type: ignore[no-untyped-call]
    config = folder / "models.toml"
    config.write_text('[[models]]\nname = "tiny"\ntorchscript = "tiny.pt"\ninput_size = [64, 64]\n')
    thread = ServerThread(settings_for(config))
    thread.start()
    yield thread
    thread.stop()


def test_torchscript_model_lists_only_layer_free_methods(scripted_server: ServerThread) -> None:
    (info,) = stub(scripted_server.address).ListModels(pb.ListModelsRequest()).models
    assert info.format == "torchscript"
    assert set(info.methods) == {
        "saliency",
        "input_x_gradient",
        "integrated_gradients",
        "smoothgrad",
        "occlusion",
    }


def test_torchscript_model_explains_with_saliency(scripted_server: ServerThread) -> None:
    reply = stub(scripted_server.address).Explain(request("tiny", "saliency", tensor_input(1)))
    assert len(reply.heatmaps) == 1


def test_torchscript_model_refuses_gradcam_naming_its_methods(
    scripted_server: ServerThread,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub(scripted_server.address).Explain(request("tiny", "gradcam", tensor_input(1)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "saliency" in caught.value.details()
