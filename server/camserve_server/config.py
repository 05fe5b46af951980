"""Settings from flags, ``CAMSERVE_*`` environment variables and a TOML file.

Precedence: flag > environment variable > the file's ``[server]`` table > default.
Models come from the file's ``[[models]]`` tables; with no file, the shipped
demo model is served.

The precedence is ``parse_args``'s two dozen lines over the ``Settings`` dataclass,
which is the one declaration of every setting (its flags and variables are made
from its fields). pydantic-settings would do the same with a second model and a
dependency on pydantic; it is not used because it would not make this shorter.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import InvalidArgument

MIB = 1 << 20
MODEL_SOURCES = ("arch", "torchscript", "exported", "onnx")
INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class ModelSpec:
    """One ``[[models]]`` table. Exactly one of ``arch``, ``torchscript``, ``exported``
    (a ``torch.export`` ``.pt2`` archive) and ``onnx`` is given.

    ``weights`` (with ``arch`` only) is a state dict file (``.pt``, ``.safetensors``), a
    folder holding ``model.safetensors`` (and timm's ``config.json``), or a torchvision
    weights entry (``ResNet50_Weights.IMAGENET1K_V2``, ``IMAGENET1K_V2``, ``DEFAULT``).
    ``kwargs`` go to the architecture's factory. Preprocessing and labels the config
    leaves out come from the weights entry or the timm model where they have them
    (``sets`` tells which the config gave).
    """

    name: str
    arch: str | None = None
    torchscript: str | None = None
    exported: str | None = None
    onnx: str | None = None
    weights: str | None = None
    num_classes: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    labels: str | None = None
    default_layer: str | None = None
    resize_mode: str = "resize"
    resize_size: int | None = None
    interpolation: str = "bilinear"
    base_dir: str = "."
    given: frozenset[str] | None = None  # the settings a config file gave; None: built in code

    def path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        candidate = Path(value)
        return candidate if candidate.is_absolute() else Path(self.base_dir) / candidate

    def sets(self, setting: str) -> bool:
        """Whether the config gave ``setting``; for a spec built in code, whether it
        differs from the default."""
        if self.given is not None:
            return setting in self.given
        return bool(getattr(self, setting) != _MODEL_DEFAULTS[setting])


_MODEL_DEFAULTS = {
    item.name: item.default if item.default_factory is MISSING else item.default_factory()
    for item in fields(ModelSpec)
}


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start. Defaults batch concurrent callers out of the box."""

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9090
    config: str | None = None
    redis_url: str | None = None
    cache_bytes: int = 512 * MIB
    cache_ttl_s: int = 3600
    cache_max_value_bytes: int = 16 * MIB
    cache_secret: str | None = field(default=None, repr=False)  # a secret: never printed
    max_batch_size: int = 32
    max_delay_ms: float = 5.0
    heavy_batch_size: int = 2
    queue_size: int = 512
    devices: str = "auto"
    memory_budget_mb: int = 0
    channels_last: str = "true"
    precision: str = "float32"
    max_message_bytes: int = 32 * MIB
    max_image_pixels: int = 40_000_000
    decode_threads: int = 4
    processes: int = 1
    max_jobs: int = 4
    max_job_steps: int = 2000
    job_cache_bytes: int = 64 * MIB
    max_evaluation_images: int = 256
    max_evaluation_maps: int = 20_000
    max_set_images: int = 100_000
    max_set_bytes: int = 1024 * MIB
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    auth_tokens: tuple[str, ...] = ()
    reflection_without_auth: bool = False
    max_connection_age_s: float = 300.0
    max_connection_age_grace_s: float = 3600.0
    grace_period_s: float = 20.0
    log_level: str = "INFO"
    models: tuple[ModelSpec, ...] = field(default=())

    @property
    def use_channels_last(self) -> bool:
        return str(self.channels_last).lower() in ("1", "true", "yes", "on")

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth_tokens)

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


_HELP = {
    "host": "address to bind the gRPC port to (0.0.0.0 for every interface)",
    "port": "gRPC port (0 picks a free one)",
    "metrics_host": "address of the Prometheus metrics endpoint",
    "metrics_port": "Prometheus metrics port (0 picks a free one, -1 disables)",
    "config": "TOML file with [server] settings and [[models]] tables",
    "redis_url": "Redis URL for the shared cache tier (default: in-process cache only)",
    "cache_bytes": "bytes the in-process activation cache may hold",
    "cache_ttl_s": "seconds a cached activation lives",
    "cache_max_value_bytes": "largest activation written to Redis",
    "cache_secret": "HMAC key (16 bytes or more) signing Redis cache entries; unsigned or "
    "badly signed entries are not served (prefer CAMSERVE_CACHE_SECRET: flags show in ps)",
    "max_batch_size": "most requests one batch may carry",
    "max_delay_ms": "longest a request waits for its batch to fill",
    "heavy_batch_size": "batch size cap of perturbation-heavy methods (scorecam, occlusion...)",
    "queue_size": "requests waiting at most; beyond, RESOURCE_EXHAUSTED",
    "devices": "'auto' (every CUDA GPU, else the CPU), 'cpu', or e.g. 'cuda:0,cuda:1'",
    "memory_budget_mb": "device memory one batch may use; perturbation chunks are sized to "
    "it (0: 1024 on a CPU, an eighth of a GPU's memory)",
    "channels_last": "run convolutions in NHWC memory format (true/false; faster on CPUs and GPUs)",
    "precision": "float32, bfloat16 or float16 (CUDA only): autocast dtype of explanation passes",
    "max_message_bytes": "largest request or reply message",
    "max_image_pixels": "largest decoded image (width x height); larger is refused before decoding",
    "decode_threads": "threads that decode and preprocess images off the event loop",
    "processes": "server processes sharing the gRPC port (SO_REUSEPORT), each with its own "
    "models; more than 1 needs --redis-url",
    "max_jobs": "optimisation jobs and evaluations running at once; beyond, RESOURCE_EXHAUSTED",
    "max_job_steps": "most optimisation steps one job may run",
    "job_cache_bytes": "bytes of finished job results kept in memory",
    "max_evaluation_images": "most images one evaluation (Evaluate) may score",
    "max_evaluation_maps": "most maps one evaluation may compute (images x methods x "
    "(1 + sanity stages))",
    "max_set_images": "most images one image set may hold",
    "max_set_bytes": "most bytes one image set's records may take in the store",
    "tls_cert": "PEM server certificate (enables TLS with --tls-key)",
    "tls_key": "PEM server private key",
    "tls_client_ca": "PEM CA bundle; when set, clients must present a certificate (mTLS)",
    "auth_tokens": "comma-separated bearer tokens; when set, calls must carry one",
    "reflection_without_auth": "serve reflection without a token when auth is on (true/false; "
    "default false: reflection tells anyone the whole API)",
    "max_connection_age_s": "seconds before a client connection is asked to reconnect",
    "max_connection_age_grace_s": "seconds a call in flight (a long job or evaluation) may "
    "keep its connection past its age; new calls reconnect at once",
    "grace_period_s": "seconds in-flight calls may finish after SIGTERM",
    "log_level": "logging level",
}


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build ``Settings`` from the command line, the environment and the config file."""
    parser = argparse.ArgumentParser(
        prog="camserve-server", description="Serve CNN explanations over gRPC."
    )
    for item in fields(Settings):
        if item.name == "models":
            continue
        parser.add_argument(
            "--" + item.name.replace("_", "-"), dest=item.name, help=_HELP[item.name]
        )
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    environ = os.environ if env is None else env
    from_env = {
        item.name: environ[f"CAMSERVE_{item.name.upper()}"]
        for item in fields(Settings)
        if f"CAMSERVE_{item.name.upper()}" in environ
    }
    config_path = given.get("config") or from_env.get("config")
    file_table: dict[str, Any] = {}
    models: tuple[ModelSpec, ...] = ()
    if config_path:
        file_table, models = load_config_file(Path(config_path))
    merged = {**file_table, **from_env, **given}
    settings = Settings(**{k: _coerce(k, v) for k, v in merged.items()})
    return replace(settings, models=models)


def load_config_file(path: Path) -> tuple[dict[str, Any], tuple[ModelSpec, ...]]:
    """Read ``[server]`` and ``[[models]]`` from a TOML file."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"cannot read config {path}: {exc}") from None
    server = dict(document.get("server", {}))
    unknown = set(server) - {f.name for f in fields(Settings)} - {"models"}
    if unknown:
        raise InvalidArgument(f"unknown [server] settings in {path}: {', '.join(sorted(unknown))}")
    models = tuple(_model_spec(table, path.parent) for table in document.get("models", []))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"model names must be unique in {path}: {names}")
    return server, models


def _model_spec(table: Mapping[str, Any], base_dir: Path) -> ModelSpec:
    known = {f.name for f in fields(ModelSpec)} - {"base_dir", "given"}
    unknown = set(table) - known
    if unknown:
        raise InvalidArgument(f"unknown model settings: {', '.join(sorted(unknown))}")
    if "name" not in table:
        raise InvalidArgument("every [[models]] table needs a name")
    sources = [k for k in MODEL_SOURCES if table.get(k)]
    if len(sources) != 1:
        raise InvalidArgument(
            f"model {table['name']!r} needs exactly one of {', '.join(MODEL_SOURCES)}; "
            f"got {sources or 'none'}"
        )
    if table.get("weights") and sources[0] != "arch":
        raise InvalidArgument(
            f"model {table['name']!r}: weights go with arch only; a {sources[0]} file "
            "carries its own weights"
        )
    values = dict(table)
    for key in ("input_size", "mean", "std"):
        if key in values:
            values[key] = tuple(values[key])
    if values.get("resize_mode", "resize") not in ("resize", "resize_crop"):
        raise InvalidArgument("resize_mode must be 'resize' or 'resize_crop'")
    if values.get("interpolation", "bilinear") not in INTERPOLATIONS:
        raise InvalidArgument(
            f"model {table['name']!r}: interpolation must be 'bilinear' or 'bicubic', "
            f"got {values['interpolation']!r}"
        )
    kwargs = values.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise InvalidArgument(
            f"model {table['name']!r}: kwargs must be a table of keyword arguments "
            "([models.kwargs] under the model's [[models]] table)"
        )
    return ModelSpec(**values, base_dir=str(base_dir), given=frozenset(table))


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if value is None:
        return None
    if name == "auth_tokens":
        return _auth_tokens(value)
    if kind == "bool":
        return parse_flag(f"setting {name}", value)
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "tuple[str, ...]":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(item.strip() for item in items if item.strip())
    except ValueError:
        raise InvalidArgument(f"setting {name} must be a {kind}, got {value!r}") from None
    return value


def _auth_tokens(value: Any) -> tuple[str, ...]:
    """The bearer tokens. A setting that is given but names none is refused: quietly
    serving without auth is what a blank Secret or a stray comma would otherwise do."""
    items = value.split(",") if isinstance(value, str) else list(value)
    tokens = tuple(str(item).strip() for item in items if str(item).strip())
    if not tokens:
        raise InvalidArgument(
            f"auth_tokens is set but names no token (got {value!r}): give comma-separated "
            "bearer tokens, or leave it unset to serve without auth"
        )
    return tokens


def parse_flag(what: str, value: Any) -> bool:
    """A true/false value named ``what`` ("setting x", "option y"): flags, variables and
    options arrive as text, where "false" would be truthy."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidArgument(f"{what} must be true or false, got {value!r}")
