"""A real server serving users' own models as they come: a torchvision weights entry from
TORCH_HOME, timm ConvNeXt, EfficientNet and RegNet (a safetensors file with kwargs, a
safetensors folder, a DDP checkpoint), and a model without weights; each answers
Grad-CAM, and ``ListModels``, the SDK and the CLI say where each model's weights come from.

Every model has seeded random weights saved to temporary files; nothing is downloaded.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from rpc_helpers import heatmap, request, stub
from safetensors.torch import save_file
from timm.data.config import resolve_model_data_config
from timm.data.transforms_factory import create_transform
from torchvision.models import MobileNet_V3_Small_Weights

from camserve import ExplainClient
from camserve.cli import main
from camserve.v1 import explain_pb2 as pb
from own_models import pictures, save_entry
from server_harness import ServerThread, settings_for

ENTRY = MobileNet_V3_Small_Weights.IMAGENET1K_V1
EFF_LABELS = ["cat", "dog", "fox"]
CONFIG = f"""
[[models]]
name = "mnv3"
arch = "mobilenet_v3_small"
weights = "{ENTRY.name}"

[[models]]
name = "cnx"
arch = "timm:test_convnext"
weights = "convnext.safetensors"
num_classes = 10
[models.kwargs]
drop_path_rate = 0.0

[[models]]
name = "eff"
arch = "timm:test_efficientnet"
weights = "effnet"

[[models]]
name = "regnet"
arch = "timm:regnetx_002"
weights = "regnet-ddp.pt"
num_classes = 10
input_size = [64, 64]

[[models]]
name = "bare"
arch = "torchvision:resnet18"
num_classes = 10
input_size = [64, 64]
"""


@dataclass
class OwnModels:
    server: ServerThread
    references: dict[str, torch.nn.Module]  # the timm modules whose weights were saved


def _seeded(name: str, seed: int, num_classes: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    module: torch.nn.Module = timm.create_model(name, num_classes=num_classes)
    return module.eval()


@pytest.fixture(scope="module")
def own_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnModels]:
    folder = tmp_path_factory.mktemp("own_models")
    save_entry(folder / "torch_home", ENTRY)
    convnext = _seeded("test_convnext", 1, 10)
    save_file(convnext.state_dict(), str(folder / "convnext.safetensors"))
    effnet = _seeded("test_efficientnet", 2, 3)
    timm.models.save_for_hf(
        effnet,
        str(folder / "effnet"),
        model_config={"label_names": EFF_LABELS},
        safe_serialization=True,
    )
    regnet = _seeded("regnetx_002", 3, 10)
    torch.save({"model": {f"module.{k}": v for k, v in regnet.state_dict().items()}, "epoch": 9},
               folder / "regnet-ddp.pt")  # fmt: skip
    config = folder / "models.toml"
    config.write_text(CONFIG)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(folder / "torch_home"))
        server = ServerThread(settings_for(config))
        server.start()
    references = {"cnx": convnext, "eff": effnet, "regnet": regnet}
    yield OwnModels(server, references)
    server.stop()


def _models(own_models: OwnModels) -> dict[str, pb.ModelInfo]:
    reply = stub(own_models.server.address).ListModels(pb.ListModelsRequest())
    return {info.name: info for info in reply.models}


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def test_list_models_says_where_weights_come_from(own_models: OwnModels) -> None:
    infos = _models(own_models)
    assert list(infos) == ["mnv3", "cnx", "eff", "regnet", "bare"]
    assert infos["mnv3"].weights_source.startswith(
        "torchvision MobileNet_V3_Small_Weights.IMAGENET1K_V1 (mobilenet_v3_small-"
    )
    assert infos["cnx"].weights_source.startswith("convnext.safetensors (sha256 ")
    assert infos["eff"].weights_source.startswith("effnet/ (sha256 ")
    assert infos["regnet"].weights_source.startswith("regnet-ddp.pt (sha256 ")
    assert infos["bare"].weights_source == "random, seed 0"


def test_sources_give_labels_classes_and_input_sizes(own_models: OwnModels) -> None:
    infos = _models(own_models)
    assert list(infos["mnv3"].labels) == list(ENTRY.meta["categories"])
    assert (infos["mnv3"].input_height, infos["mnv3"].input_width) == (224, 224)
    assert list(infos["eff"].labels) == EFF_LABELS and infos["eff"].num_classes == 3
    assert (infos["cnx"].input_height, infos["cnx"].num_classes) == (160, 10)  # pretrained_cfg
    assert (infos["regnet"].input_height, infos["regnet"].input_width) == (64, 64)  # the config
    assert not infos["bare"].has_labels


@pytest.mark.parametrize("model", ["mnv3", "cnx", "eff", "regnet", "bare"])
def test_each_model_answers_gradcam(own_models: OwnModels, model: str) -> None:
    picture = pictures()[1]
    reply = stub(own_models.server.address).Explain(request(model, "gradcam", _png(picture)))
    (answer,) = reply.heatmaps
    values = heatmap(answer)
    assert values.shape == (picture.height, picture.width)
    assert np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0
    assert reply.layer
    if model == "eff":
        assert answer.label == EFF_LABELS[answer.target]


@pytest.mark.parametrize("model", ["cnx", "eff", "regnet"])
def test_timm_models_answer_as_timm_runs_them(own_models: OwnModels, model: str) -> None:
    """The served logits are those of the saved module on timm's own eval transform of
    the picture (Pillow rounds its resize to uint8, hence the tolerance)."""
    reference = own_models.references[model]
    config = resolve_model_data_config(reference)  # type: ignore[no-untyped-call]
    if model == "regnet":
        config = {**config, "input_size": (3, 64, 64)}  # the same crop_pct, as served
    transform = create_transform(**config)
    picture = pictures()[4]
    with torch.inference_mode():
        logits = reference(transform(picture).unsqueeze(0))[0]
    reply = stub(own_models.server.address).Explain(
        request(model, "gradcam", _png(picture), top_k=1)
    )
    served = {score.index: score.logit for score in reply.top_classes}
    expected = {int(i): float(logits[i]) for i in served}
    scale = float(logits.abs().max())
    for index, logit in served.items():
        assert logit == pytest.approx(expected[index], abs=0.02 * scale)
    assert reply.top_classes[0].index == int(logits.argmax())


def test_sdk_and_cli_show_the_weights_source(
    own_models: OwnModels, capsys: pytest.CaptureFixture[str]
) -> None:
    with ExplainClient(own_models.server.address, timeout=30.0) as client:
        sources = {info.name: info.weights_source for info in client.models()}
    assert sources["bare"] == "random, seed 0"
    assert sources["cnx"].startswith("convnext.safetensors (sha256 ")
    assert main(["--server", own_models.server.address, "models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "weights: random, seed 0" in lines["bare"]
    assert "weights: torchvision MobileNet_V3_Small_Weights.IMAGENET1K_V1" in lines["mnv3"]


def test_a_missing_entry_file_stops_the_start_in_one_line(tmp_path: Path) -> None:
    """``camserve-server`` exits 2 with one line naming the file's path and its URL."""
    config = tmp_path / "models.toml"
    config.write_text(
        f'[[models]]\nname = "mnv3"\narch = "mobilenet_v3_small"\nweights = "{ENTRY.name}"\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "camserve_server", "--config", str(config), "--port", "0",
         "--metrics-port", "-1", "--log-level", "WARNING"],
        capture_output=True, text=True, timeout=240, check=False,
        env={**os.environ, "TORCH_HOME": str(tmp_path / "empty")},
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    expected = tmp_path / "empty" / "hub" / "checkpoints" / Path(ENTRY.url).name
    assert lines[0].startswith("camserve-server: model 'mnv3': ")
    assert str(expected) in lines[0] and ENTRY.url in lines[0]
