"""Users' own models as they come: torchvision weights entries read from a temporary
TORCH_HOME, timm models with their ``pretrained_cfg``, safetensors files and folders,
training checkpoints, ``[models.kwargs]``, and models without weights.

Every model has seeded random weights saved to temporary files; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from timm.data.config import resolve_model_data_config
from timm.data.transforms_factory import create_transform
from torchvision.models import EfficientNet_B0_Weights, ResNet50_Weights
from torchvision.transforms.v2 import functional as TF

from camserve_server.config import ModelSpec, load_config_file
from camserve_server.errors import InvalidArgument
from camserve_server.models.arch_model import arch_source
from camserve_server.models.loading import LoadedModel, load_model
from camserve_server.models.preprocess import Preprocess
from camserve_server.models.source_defaults import preprocess_for
from camserve_server.models.torchvision_weights import entry_defaults, resolve_entry
from own_models import entry_file, pictures, save_entry

CPU = [torch.device("cpu")]
BUDGET = 1 << 30
R50_ENTRY = ResNet50_Weights.IMAGENET1K_V2


def grey_levels(levels: float, preprocess: Preprocess) -> float:
    """``levels`` of 255 in the model's normalised input, on its narrowest channel."""
    return levels / 255 / min(preprocess.std)


def as_float(picture: Image.Image) -> torch.Tensor:
    tensor: torch.Tensor = TF.to_dtype(TF.pil_to_tensor(picture), torch.float32, scale=True)
    return tensor


def write_config(folder: Path, text: str) -> ModelSpec:
    """The one model of a config file holding ``text``."""
    path = folder / "models.toml"
    path.write_text(text)
    _, (spec,) = load_config_file(path)
    return spec


def refused(spec: ModelSpec) -> str:
    """The one line ``load_model`` refuses ``spec`` with."""
    with pytest.raises(InvalidArgument) as caught:
        load_model(spec, CPU, BUDGET)
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith(f"model {spec.name!r}: "), message
    return message


# --- torchvision weights entries -----------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME holding a seeded random ResNet-50 under IMAGENET1K_V2's file name."""
    home = tmp_path_factory.mktemp("torch_home")
    save_entry(home, R50_ENTRY)
    return home


@pytest.fixture
def with_torch_home(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return torch_home


@pytest.fixture(scope="module")
def r50(torch_home: Path) -> Iterator[LoadedModel]:
    """The ResNet-50 served through ``weights = "ResNet50_Weights.IMAGENET1K_V2"``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(torch_home))
        spec = ModelSpec(name="r50", arch="resnet50", weights="ResNet50_Weights.IMAGENET1K_V2")
        yield load_model(spec, CPU, BUDGET)


def test_entry_labels_are_its_categories(r50: LoadedModel) -> None:
    assert r50.labels == list(R50_ENTRY.meta["categories"])
    assert r50.primary.num_classes == 1000


def test_entry_weights_are_the_file_in_torch_hubs_folder(
    r50: LoadedModel, torch_home: Path
) -> None:
    path = entry_file(torch_home, R50_ENTRY)
    state = torch.load(path, weights_only=True)
    served = r50.primary.module.state_dict()
    assert all(torch.equal(served[key], value) for key, value in state.items())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert r50.weights_digest == digest
    assert r50.weights_source == (
        f"torchvision ResNet50_Weights.IMAGENET1K_V2 ({path.name}, sha256 {digest[:12]})"
    )


def test_entry_preprocessing_is_its_transforms(r50: LoadedModel) -> None:
    preprocess = r50.preprocess
    assert (preprocess.input_size, preprocess.resize_size) == ((224, 224), 232)
    assert (preprocess.resize_mode, preprocess.interpolation) == ("resize_crop", "bilinear")
    transforms = R50_ENTRY.transforms()
    for picture in pictures():
        x, _ = preprocess(picture)
        # Resized in float, as the imaging tests compare: the same to float rounding.
        torch.testing.assert_close(x, transforms(as_float(picture)), rtol=0, atol=1e-5)
        # Pillow rounds its resize to uint8: one grey level apart at most.
        reference = transforms(picture)
        assert float((x - reference).abs().max()) <= grey_levels(1.0, preprocess) + 1e-5


@pytest.mark.parametrize("name", ["IMAGENET1K_V2", "DEFAULT", "ResNet50_Weights.DEFAULT"])
def test_entry_names_short_and_default(with_torch_home: Path, tmp_path: Path, name: str) -> None:
    spec = write_config(
        tmp_path, f'[[models]]\nname = "r50"\narch = "torchvision:resnet50"\nweights = "{name}"\n'
    )
    source = arch_source(spec)
    assert source.weights_source.startswith("torchvision ResNet50_Weights.IMAGENET1K_V2 (")


def test_missing_entry_file_names_the_path_and_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    message = refused(ModelSpec(name="r50", arch="resnet50", weights="IMAGENET1K_V1"))
    path = entry_file(tmp_path, ResNet50_Weights.IMAGENET1K_V1)
    assert str(path) in message and ResNet50_Weights.IMAGENET1K_V1.url in message
    assert not path.exists()  # never downloaded


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"num_classes": 10}, "have 1000 classes"),
        ({"weights": "ResNet18_Weights.DEFAULT"}, "ResNet50_Weights.{IMAGENET1K_V1"),
        ({"weights": "IMAGENET1K_V7"}, "no weights entry 'IMAGENET1K_V7'"),
        ({"arch": "timm:test_convnext"}, "name a torchvision entry"),
        ({"arch": "timm:test_convnext", "weights": "ResNet50_Weights.DEFAULT"}, "no such file"),
    ],
)
def test_entry_mistakes_are_one_line(
    with_torch_home: Path, settings: dict[str, object], expected: str
) -> None:
    spec = ModelSpec(**{"name": "r50", "arch": "resnet50", "weights": "DEFAULT", **settings})  # type: ignore[arg-type]
    assert expected in refused(spec)


def test_config_settings_win_over_the_entry(tmp_path: Path) -> None:
    spec = write_config(
        tmp_path,
        '[[models]]\nname = "r50"\narch = "resnet50"\nweights = "DEFAULT"\n'
        "input_size = [112, 112]\nmean = [0.5, 0.5, 0.5]\n",
    )
    preprocess = preprocess_for(spec, entry_defaults("r50", R50_ENTRY))
    assert preprocess.input_size == (112, 112)
    assert preprocess.resize_size == 116  # the entry's 232 for 224, scaled with it
    assert preprocess.mean == (0.5, 0.5, 0.5)
    assert preprocess.std == tuple(R50_ENTRY.transforms().std)


def test_bicubic_entry_matches_its_transforms_on_pictures() -> None:
    entry = resolve_entry("b0", "efficientnet_b0", "DEFAULT")
    assert entry is EfficientNet_B0_Weights.IMAGENET1K_V1
    preprocess = preprocess_for(
        ModelSpec(name="b0", arch="efficientnet_b0"), entry_defaults("b0", entry)
    )
    assert (preprocess.interpolation, preprocess.resize_size) == ("bicubic", 256)
    transforms = entry.transforms()
    for picture in pictures():
        x, _ = preprocess(picture)
        # Pillow's two passes, each rounded to uint8: about one grey level apart.
        assert float((x - transforms(picture)).abs().max()) <= grey_levels(1.5, preprocess)


def test_interpolation_changes_the_digest_only_when_not_bilinear() -> None:
    bilinear = Preprocess(input_size=(224, 224), interpolation="bilinear")
    assert bilinear.digest() == Preprocess(input_size=(224, 224)).digest() == "e5f79907c54f6e20"
    assert Preprocess(input_size=(224, 224), interpolation="bicubic").digest() != bilinear.digest()
    with pytest.raises(ValueError, match="interpolation must be"):
        Preprocess(input_size=(8, 8), interpolation="nearest")


# --- timm ----------------------------------------------------------------------------------------

TIMM_MODELS = ["test_convnext", "test_efficientnet", "regnetx_002"]


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_timm_preprocessing_comes_from_pretrained_cfg(name: str) -> None:
    model = load_model(ModelSpec(name="m", arch=f"timm:{name}", num_classes=5), CPU, BUDGET)
    module = model.primary.module
    assert isinstance(module, torch.nn.Module)
    config = resolve_model_data_config(module)  # type: ignore[no-untyped-call]
    preprocess = model.preprocess
    size = config["input_size"][1]
    assert preprocess.input_size == tuple(config["input_size"][1:])
    assert (preprocess.mean, preprocess.std) == (config["mean"], config["std"])
    assert preprocess.interpolation == config["interpolation"] == "bicubic"
    assert preprocess.resize_size == math.floor(size / config["crop_pct"])
    assert model.primary.num_classes == 5
    transform = create_transform(**config)
    for picture in pictures()[::3]:
        x, _ = preprocess(picture)
        assert float((x - transform(picture)).abs().max()) <= grey_levels(1.5, preprocess)


def test_timm_input_size_from_the_config_scales_the_resize(tmp_path: Path) -> None:
    spec = write_config(
        tmp_path, '[[models]]\nname = "b0"\narch = "timm:efficientnet_b0"\ninput_size = [64, 64]\n'
    )
    model = load_model(spec, CPU, BUDGET)
    assert model.preprocess.input_size == (64, 64)
    assert model.preprocess.resize_size == 73  # floor(64 / 0.875), as timm's crop_pct gives
    assert model.primary.input_size == (64, 64)


def test_timm_without_the_extra_says_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    message = refused(ModelSpec(name="cnx", arch="timm:convnext_tiny"))
    assert "pip install 'camserve[timm]'" in message


def test_unknown_timm_model_is_one_line() -> None:
    assert "timm has no model 'convnext_huge_nope'" in refused(
        ModelSpec(name="cnx", arch="timm:convnext_huge_nope")
    )


# --- weights files -------------------------------------------------------------------------------


def seeded_resnet18(seed: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    module: torch.nn.Module = torchvision.models.resnet18(num_classes=10)
    return module


def assert_same_weights(model: LoadedModel, reference: torch.nn.Module) -> None:
    served = model.primary.module.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(served[key], value), key


R18_TOML = '[[models]]\nname = "r18"\narch = "resnet18"\nnum_classes = 10\ninput_size = [64, 64]\n'


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda s: {f"module.{k}": v for k, v in s.items()}, id="ddp"),
        pytest.param(lambda s: {"state_dict": s, "epoch": 3}, id="nested-state_dict"),
        pytest.param(
            lambda s: {"model": {f"module.{k}": v for k, v in s.items()}}, id="nested-ddp"
        ),
    ],
)
def test_training_checkpoints_load(tmp_path: Path, wrap: object) -> None:
    reference = seeded_resnet18()
    torch.save(wrap(reference.state_dict()), tmp_path / "ckpt.pt")  # type: ignore[operator]
    spec = write_config(tmp_path, R18_TOML + 'weights = "ckpt.pt"\n')
    model = load_model(spec, CPU, BUDGET)
    assert_same_weights(model, reference)
    digest = hashlib.sha256((tmp_path / "ckpt.pt").read_bytes()).hexdigest()
    assert model.weights_digest == digest
    assert model.weights_source == f"ckpt.pt (sha256 {digest[:12]})"


def test_safetensors_file_loads_without_pickle(tmp_path: Path) -> None:
    reference = seeded_resnet18()
    save_file(reference.state_dict(), str(tmp_path / "r18.safetensors"))
    spec = write_config(tmp_path, R18_TOML + 'weights = "r18.safetensors"\n')
    model = load_model(spec, CPU, BUDGET)
    assert_same_weights(model, reference)
    assert (
        model.weights_digest
        == hashlib.sha256((tmp_path / "r18.safetensors").read_bytes()).hexdigest()
    )


def test_timm_safetensors_file_with_kwargs(tmp_path: Path) -> None:
    torch.manual_seed(5)
    reference = timm.create_model("test_convnext", num_classes=10)
    save_file(reference.state_dict(), str(tmp_path / "convnext.safetensors"))
    spec = write_config(
        tmp_path,
        '[[models]]\nname = "cnx"\narch = "timm:test_convnext"\n'
        'weights = "convnext.safetensors"\nnum_classes = 10\n'
        "[models.kwargs]\ndrop_path_rate = 0.0\n",
    )
    assert spec.kwargs == {"drop_path_rate": 0.0}
    model = load_model(spec, CPU, BUDGET)
    assert_same_weights(model, reference)
    assert model.preprocess.input_size == (160, 160)  # test_convnext's pretrained_cfg
    file_digest = hashlib.sha256((tmp_path / "convnext.safetensors").read_bytes()).hexdigest()
    assert model.weights_source == f"convnext.safetensors (sha256 {file_digest[:12]})"
    assert model.weights_digest != file_digest  # the kwargs are hashed in


def test_timm_folder_gives_classes_labels_and_preprocessing(tmp_path: Path) -> None:
    torch.manual_seed(6)
    reference = timm.create_model("test_efficientnet", num_classes=3)
    timm.models.save_for_hf(
        reference,
        str(tmp_path / "effnet"),
        model_config={"label_names": ["cat", "dog", "fox"]},
        data_config={"input_size": (3, 96, 96), "crop_pct": 0.9, "interpolation": "bilinear"},
        safe_serialization=True,
    )
    spec = write_config(
        tmp_path, '[[models]]\nname = "eff"\narch = "timm:test_efficientnet"\nweights = "effnet"\n'
    )
    model = load_model(spec, CPU, BUDGET)
    assert_same_weights(model, reference)
    assert model.labels == ["cat", "dog", "fox"]
    assert model.primary.num_classes == 3
    assert model.preprocess.input_size == (96, 96)
    assert (model.preprocess.resize_size, model.preprocess.interpolation) == (106, "bilinear")
    assert model.weights_source.startswith("effnet/ (sha256 ")


def test_timm_folder_for_another_architecture_is_one_line(tmp_path: Path) -> None:
    timm.models.save_for_hf(
        timm.create_model("test_efficientnet", num_classes=3),
        str(tmp_path / "effnet"),
        safe_serialization=True,
    )
    message = refused(
        ModelSpec(name="cnx", arch="timm:test_convnext", weights=str(tmp_path / "effnet"))
    )
    assert "'test_efficientnet'" in message and "config.json" in message


def test_mismatched_keys_are_one_line_naming_a_few(tmp_path: Path) -> None:
    state = seeded_resnet18().state_dict()
    state["head.weight"] = state.pop("fc.weight")
    save_file(state, str(tmp_path / "renamed.safetensors"))
    message = refused(
        ModelSpec(
            name="r18",
            arch="resnet18",
            num_classes=10,
            weights=str(tmp_path / "renamed.safetensors"),
        )
    )
    assert "keys 1 missing (fc.weight); 1 unexpected (head.weight)" in message


def test_a_file_that_is_not_safetensors_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    message = refused(
        ModelSpec(name="r18", arch="resnet18", weights=str(tmp_path / "bad.safetensors"))
    )
    assert "not a safetensors file" in message


def test_a_folder_without_model_safetensors_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    message = refused(ModelSpec(name="r18", arch="resnet18", weights=str(tmp_path / "empty")))
    assert "holds no model.safetensors" in message


# --- kwargs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "kwargs", "expected"),
    [
        ("resnet18", {"widen": 2}, "takes no keyword argument 'widen' (from [models.kwargs])"),
        ("timm:test_convnext", {"depth": 3}, "takes no keyword argument 'depth'"),
        ("torch.nn:Linear", {"in_features": 4}, "missing 1 required positional argument"),
        ("resnet18", {"num_classes": 3}, "set num_classes in the model's table"),
        ("resnet18", {"weights": "DEFAULT"}, "may not set 'weights'"),
        ("timm:test_convnext", {"pretrained": True}, "may not set 'pretrained'"),
    ],
)
def test_bad_kwargs_are_one_line(arch: str, kwargs: dict[str, object], expected: str) -> None:
    assert expected in refused(ModelSpec(name="m", arch=arch, kwargs=kwargs))


@pytest.mark.parametrize(
    ("arch", "kwargs", "check"),
    [
        ("torchvision.models:mobilenet_v2", {"width_mult": 0.25}, "features.0.0.out_channels"),
        ("mobilenet_v3_small", {"width_mult": 0.5}, "features.0.0.out_channels"),
        ("timm:test_convnext", {"dims": (8, 16, 32, 64)}, "stem.0.out_channels"),
    ],
)
def test_kwargs_reach_every_kind_of_factory(
    arch: str, kwargs: dict[str, object], check: str
) -> None:
    model = load_model(
        ModelSpec(name="m", arch=arch, num_classes=4, kwargs=kwargs, input_size=(64, 64)),
        CPU,
        BUDGET,
    )
    path, _, attribute = check.rpartition(".")
    module = model.primary.module
    assert isinstance(module, torch.nn.Module)
    assert getattr(module.get_submodule(path), attribute) in (8, 16, 32)
    assert model.primary.num_classes == 4


def test_kwargs_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="kwargs must be a table"):
        write_config(tmp_path, '[[models]]\nname = "m"\narch = "resnet18"\nkwargs = 3\n')


# --- without weights -----------------------------------------------------------------------------


def test_without_weights_a_warning_names_the_model(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="camserve_server.models.loading"):
        model = load_model(
            ModelSpec(name="bare", arch="resnet18", num_classes=10, input_size=(64, 64)),
            CPU,
            BUDGET,
        )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'bare'" in warnings[0].getMessage()
    assert "serving random weights, seed 0" in warnings[0].getMessage()
    assert model.weights_source == "random, seed 0"


def test_with_weights_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.save(seeded_resnet18().state_dict(), tmp_path / "r18.pt")
    with caplog.at_level(logging.WARNING):
        load_model(write_config(tmp_path, R18_TOML + 'weights = "r18.pt"\n'), CPU, BUDGET)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_config_records_the_settings_it_gives(tmp_path: Path) -> None:
    spec = write_config(
        tmp_path,
        R18_TOML + 'interpolation = "bicubic"\n[models.kwargs]\nzero_init_residual = true\n',
    )
    assert spec.sets("input_size") and spec.sets("interpolation") and spec.sets("kwargs")
    assert not spec.sets("mean") and not spec.sets("resize_size")
    with pytest.raises(InvalidArgument, match="interpolation must be"):
        write_config(tmp_path, R18_TOML + 'interpolation = "lanczos"\n')
