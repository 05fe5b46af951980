"""Reading a model's weights, never with pickle, and fitting them to the architecture.

A weights source is a ``.safetensors`` file (``safetensors.torch.load_file``), a folder
holding ``model.safetensors`` (the Hugging Face / timm layout, next to its
``config.json``), or any other file, read with ``torch.load(weights_only=True)``. A
training checkpoint that nests the state dict under ``state_dict``, ``model`` or
``model_state_dict`` is unwrapped, and a prefix every key shares from
``DistributedDataParallel`` (``module.``) or ``torch.compile`` (``_orig_mod.``) is
dropped when the model's own keys lack it.

Every failure is ``InvalidArgument`` in one line naming the model and the file; never
torch's own text for weights it refuses, which recommends ``weights_only=False``, that
is, running whatever code the file holds.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidArgument, choices

log = logging.getLogger(__name__)

SAFETENSORS_FILE = "model.safetensors"
NESTING_KEYS = ("state_dict", "model", "model_state_dict")
SHARED_PREFIXES = ("module.", "_orig_mod.")
_SAVE_HINT = "save them with torch.save(model.state_dict(), path) or safetensors"

StateDict = Mapping[str, torch.Tensor]


def weights_files(model: str, path: Path) -> list[Path]:
    """The files whose bytes are the weights at ``path``: the file itself, or a folder's
    ``model.safetensors`` and, when present, its ``config.json``."""
    if not path.is_dir():
        return [path]
    tensors = path / SAFETENSORS_FILE
    if not tensors.is_file():
        raise InvalidArgument(
            f"model {model!r}: weights folder {path} holds no {SAFETENSORS_FILE} "
            "(a folder is read in the Hugging Face / timm layout: config.json + model.safetensors)"
        )
    config = path / "config.json"
    return [tensors, config] if config.is_file() else [tensors]


def files_digest(model: str, paths: list[Path]) -> str:
    """The sha256 of one file; of several, the sha256 of their names and sha256s. Reading
    them first also makes a missing or unreadable file one clear error."""
    digests = [_file_sha256(model, path) for path in paths]
    if len(digests) == 1:
        return digests[0]
    joined = "".join(f"{path.name}:{digest}\n" for path, digest in zip(paths, digests, strict=True))
    return hashlib.sha256(joined.encode()).hexdigest()


def _file_sha256(model: str, path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InvalidArgument(f"model {model!r}: cannot read {path}: {reason}") from None
    return digest.hexdigest()


def read_state_dict(model: str, path: Path) -> StateDict:
    """The state dict at ``path`` (a file or a safetensors folder), unwrapped."""
    if path.is_dir():
        return read_state_dict(model, path / SAFETENSORS_FILE)
    if path.suffix == ".safetensors":
        state = _read_safetensors(model, path)
    else:
        state = _read_torch(model, path)
    return unwrap(model, path, state)


def _read_safetensors(model: str, path: Path) -> object:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except OSError as exc:
        raise InvalidArgument(
            f"model {model!r}: cannot read weights {path}: {exc.strerror or exc}"
        ) from None
    except (SafetensorError, ValueError, RuntimeError) as exc:
        log.debug("safetensors.load_file(%s): %s", path, exc)
        raise InvalidArgument(
            f"model {model!r}: weights {path} are not a safetensors file "
            "(save them with safetensors.torch.save_file(model.state_dict(), path))"
        ) from None


def _read_torch(model: str, path: Path) -> object:
    try:
        with warnings.catch_warnings():
            # A pickle of a newer protocol (pickle.dump, not torch.save) draws a warning
            # ahead of the error below: noise on the one line start-up failures get.
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise InvalidArgument(
            f"model {model!r}: cannot read weights {path}: {exc.strerror or exc}"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:
        # Fed random bytes, a truncated archive or a pickled object, torch's unpickler
        # raises almost any kind (UnpicklingError, IndexError, KeyError, EOFError...), and
        # its text recommends weights_only=False: only the kind is logged.
        log.debug("torch.load(%s, weights_only=True): %s", path, type(exc).__name__)
        raise InvalidArgument(
            f"model {model!r}: weights {path} are not a state dict, or hold Python objects "
            f"besides tensors, which are never unpickled ({_SAVE_HINT})"
        ) from None


def unwrap(model: str, path: Path, state: object) -> StateDict:
    """The tensors of ``state``, or of the state dict a checkpoint nests in it."""
    while isinstance(state, Mapping) and not _all_tensors(state):
        nested = next((state[key] for key in NESTING_KEYS if key in state), None)
        if not isinstance(nested, Mapping):
            break
        state = nested
    if not isinstance(state, Mapping) or not _all_tensors(state):
        kind = type(state).__name__ if not isinstance(state, Mapping) else "mapping of non-tensors"
        raise InvalidArgument(
            f"model {model!r}: weights {path} hold a {kind}, not a state dict ({_SAVE_HINT})"
        )
    return dict(state)


def without_wrapper_prefix(state: StateDict, expected: set[str]) -> StateDict:
    """``state`` without a ``module.`` / ``_orig_mod.`` prefix that every key has and the
    model's own keys (``expected``) do not."""
    tensors = dict(state)
    for prefix in SHARED_PREFIXES * 2:  # DDP around a compiled model, or the other way
        if tensors and all(key.startswith(prefix) for key in tensors):
            if expected and all(key.startswith(prefix) for key in expected):
                continue
            tensors = {key[len(prefix) :]: value for key, value in tensors.items()}
    return tensors


def _all_tensors(state: Mapping[object, object]) -> bool:
    return all(isinstance(key, str) and isinstance(v, torch.Tensor) for key, v in state.items())


def load_into(model: str, arch: str, module: nn.Module, state: StateDict, path: Path) -> None:
    """Load ``state`` into ``module``, or say in one line which keys do not fit."""
    state = without_wrapper_prefix(state, set(module.state_dict()))
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that differ are refused even when not strict
        raise InvalidArgument(
            f"model {model!r}: weights {path} do not fit architecture {arch!r}: {load_errors(exc)}"
        ) from None
    problems = [
        f"{len(keys)} {what} ({choices(keys, limit=3)})"
        for what, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
        if keys
    ]
    if problems:
        raise InvalidArgument(
            f"model {model!r}: weights {path} do not fit architecture {arch!r}: "
            f"keys {'; '.join(problems)}"
        )


def load_errors(exc: RuntimeError) -> str:
    """``load_state_dict``'s several lines in one: the keys whose shapes differ, or (when
    strict) those missing and unexpected."""
    text = str(exc)
    reshaped = re.findall(r"size mismatch for ([^:\s]+):", text)
    if reshaped:
        return f"{len(reshaped)} with another shape ({choices(reshaped, limit=3)})"
    problems = []
    for heading, what in (("Missing key(s)", "missing"), ("Unexpected key(s)", "unexpected")):
        found = re.search(re.escape(heading) + r" in state_dict: ([^\n]*)", text)
        if found:
            keys = re.findall(r'"([^"]+)"', found.group(1))
            problems.append(f"{len(keys)} {what} ({choices(keys, limit=3)})")
    if problems:
        return f"keys {'; '.join(problems)}"
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    return lines[0] if lines else first_line(exc)


def first_line(exc: BaseException) -> str:
    """An exception's first line of text, or its kind when it has none."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
