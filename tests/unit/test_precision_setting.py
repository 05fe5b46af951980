"""The ``precision`` setting: parsed like the others, checked against the devices, in the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from camserve_server.config import parse_args
from camserve_server.errors import InvalidArgument
from camserve_server.runtime.cache import CacheKey, cache_key
from camserve_server.runtime.precision import autocast_dtype, mixed_precision

CPU = torch.device("cpu")
FIELDS = ("demo", "w" * 64, "preprocess-digest", "features", "ab" * 32)


def test_precision_defaults_to_float32_and_comes_from_flag_env_and_file(tmp_path: Path) -> None:
    assert parse_args([], env={}).precision == "float32"
    assert parse_args(["--precision", "bfloat16"], env={}).precision == "bfloat16"
    assert parse_args([], env={"CAMSERVE_PRECISION": "bfloat16"}).precision == "bfloat16"
    config = tmp_path / "server.toml"
    config.write_text('[server]\nprecision = "bfloat16"\n')
    assert parse_args(["--config", str(config)], env={}).precision == "bfloat16"
    flag_wins = parse_args(["--precision", "float32"], env={"CAMSERVE_PRECISION": "bfloat16"})
    assert flag_wins.precision == "float32"


def test_precision_names_map_to_autocast_dtypes() -> None:
    assert autocast_dtype("float32", [CPU]) is None
    assert autocast_dtype("bfloat16", [CPU]) == torch.bfloat16
    assert autocast_dtype("BFloat16", [CPU]) == torch.bfloat16
    assert autocast_dtype("float16", [torch.device("cuda:0")]) == torch.float16


def test_float16_on_a_cpu_is_refused_naming_the_alternatives() -> None:
    with pytest.raises(InvalidArgument, match="float16 needs CUDA") as caught:
        autocast_dtype("float16", [CPU])
    assert "bfloat16" in str(caught.value)


def test_an_unknown_precision_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(InvalidArgument, match="float32, bfloat16, float16"):
        autocast_dtype("int8", [CPU])


def test_mixed_precision_enters_autocast_only_for_reduced_dtypes() -> None:
    with mixed_precision(CPU, None):
        assert not torch.is_autocast_enabled("cpu")
    with mixed_precision(CPU, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_cache_key_differs_between_precisions_and_float32_keys_are_unchanged() -> None:
    float32 = cache_key(*FIELDS)
    assert cache_key(*FIELDS, precision="float32") == float32
    assert float32 == CacheKey(*FIELDS).render()  # the key a float32 server always wrote
    bfloat16 = cache_key(*FIELDS, precision="bfloat16")
    float16 = cache_key(*FIELDS, precision="float16")
    assert len({float32, bfloat16, float16}) == 3
    # only the preprocessing part differs: the same model, layer and image
    assert float32.split(":")[:3] == bfloat16.split(":")[:3]
    assert float32.split(":")[4:] == bfloat16.split(":")[4:]
