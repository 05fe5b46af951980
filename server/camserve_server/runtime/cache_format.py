"""What the activation cache stores: short string keys and a versioned binary value format.

A value is one image's layer activation ``(K, h, w)`` and logits ``(C,)``. It is
written as a fixed header, one descriptor per tensor and the raw little-endian
tensor bytes; never pickle, so a blob read back from a shared Redis can only
ever become two float32 tensors or a ``CacheFormatError``.

Layout (all integers little-endian)::

    header      magic b"CSV1" | version u16 | tensor count u8 | flags u8 | crc32 u32
                | sha256 of the key, 32 bytes
    descriptor  dtype code u8 | ndim u8 | ndim x dim u32 | payload bytes u64   (per tensor)
    payload     raw tensor bytes, in descriptor order
    signature   HMAC-SHA256 of the key and every byte before it, 32 bytes; only when
                flags has ``FLAG_SIGNED`` (``cache_signing``)

The crc32 covers the descriptors and payloads. The key digest says which key the entry
was written under, so an entry copied under another key (another image's) is refused:
the shared Redis is not trusted to keep entries where they were put. Version 1 (no key
digest) lived under ``camserve:v1`` keys, which version 2 never reads.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch

from .cache_signing import MAC_SIZE, SigningKey

if TYPE_CHECKING:
    from .cache_observer import ErrorKind

MAGIC = b"CSV1"
FORMAT_VERSION = 2
KEY_PREFIX = f"camserve:v{FORMAT_VERSION}"
FLAG_SIGNED = 0x01

StoreDtype = Literal["float32", "float16"]

_HEADER = struct.Struct("<4sHBBI32s")
_DESCRIPTOR = struct.Struct("<BB")
_DIM = struct.Struct("<I")
_NBYTES = struct.Struct("<Q")
_MAX_NDIM = 8
_FLOAT16_MAX = 65504.0

# dtype code -> (name, numpy little-endian dtype, bytes per element)
_CODES: dict[int, tuple[StoreDtype, str, int]] = {
    1: ("float32", "<f4", 4),
    2: ("float16", "<f2", 2),
}
_CODE_OF: dict[StoreDtype, int] = {name: code for code, (name, _, _) in _CODES.items()}
_EXPECTED_NDIM = (3, 1)  # activation (K, h, w), logits (C,)

_SAFE_COMPONENT = re.compile(r"[A-Za-z0-9._\-/]{1,64}")


class CacheFormatError(ValueError):
    """A blob that is not a valid cached activation (wrong magic, version, length or checksum).

    ``kind`` is the ``camserve_cache_errors_total`` kind a reader counts it as."""

    kind: ClassVar[ErrorKind] = "decode"


class ForeignEntryError(CacheFormatError):
    """A well-formed entry written under another key: never served as this key's value."""

    kind: ClassVar[ErrorKind] = "foreign"


class UnsignedEntryError(CacheFormatError):
    """An entry without a signature, read by a server that has a cache secret."""

    kind: ClassVar[ErrorKind] = "unsigned"


class SignatureError(CacheFormatError):
    """An entry whose signature does not verify: another secret, or tampered with."""

    kind: ClassVar[ErrorKind] = "signature"


@dataclass(frozen=True)
class CachedActivation:
    """One image's layer activation ``(K, h, w)`` and logits ``(C,)``.

    Always float32 in memory and in the blob. On a server whose ``precision`` is
    ``bfloat16`` or ``float16`` they were computed under ``torch.autocast`` at that
    dtype and upcast (the activation holds 16-bit-rounded values); the key's
    ``precision`` keeps such entries apart from float32 ones.
    """

    activation: torch.Tensor
    logits: torch.Tensor

    def __post_init__(self) -> None:
        if self.activation.dim() != 3 or self.logits.dim() != 1:
            raise ValueError(
                "expected activation (K, h, w) and logits (C,), got "
                f"{tuple(self.activation.shape)} and {tuple(self.logits.shape)}"
            )

    @property
    def nbytes(self) -> int:
        """Bytes held by the two tensors."""
        return int(self.activation.nbytes + self.logits.nbytes)

    def compact(self) -> CachedActivation:
        """This value as detached, contiguous float32 CPU tensors that own exactly their bytes.

        A row sliced from a batch tensor is copied, so a cached entry never keeps
        the whole batch alive. Already-compact values are returned as they are.
        """
        act, logits = _compact(self.activation), _compact(self.logits)
        if act is self.activation and logits is self.logits:
            return self
        return CachedActivation(act, logits)


def _compact(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.device.type != "cpu" or t.dtype != torch.float32:
        return t.to(device="cpu", dtype=torch.float32).contiguous()
    if not t.is_contiguous() or t.untyped_storage().nbytes() != t.nbytes:
        return t.clone(memory_format=torch.contiguous_format)
    return t


@dataclass(frozen=True)
class CacheKey:
    """Everything an activation depends on; ``render()`` gives the short store key.

    ``precision`` is the server's autocast dtype: a ``bfloat16`` server's activation
    was computed in bfloat16 (then stored as float32), so it gets its own key and is
    never served by, or to, a ``float32`` server sharing the Redis.
    """

    model: str
    weights_digest: str
    preprocess: str
    layer: str
    image_hash: str
    precision: str = "float32"

    def render(self) -> str:
        """``camserve:v2:{model}@{weights[:16]}:{preprocess digest}:{layer}:{image hash}``.

        The preprocess digest covers the precision too, except for float32.
        """
        return self.parts().render()

    def parts(self) -> KeyParts:
        """The rendered fields of this key."""
        computed = self.preprocess
        if self.precision != "float32":
            computed = f"{self.preprocess}|precision={self.precision}"
        return KeyParts(
            model=f"{_component(self.model)}@{_component(self.weights_digest[:16])}",
            preprocess=hashlib.sha256(computed.encode()).hexdigest()[:16],
            layer=_component(self.layer),
            image=_component(self.image_hash),
        )

    def __str__(self) -> str:
        return self.render()


@dataclass(frozen=True)
class KeyParts:
    """The fields of a rendered key, as rendered: what a reader of an opaque key string
    needs to know which model, preprocessing and layer an entry must fit."""

    model: str  # "{model}@{weights digest[:16]}"
    preprocess: str  # digest of the preprocessing (and precision)
    layer: str
    image: str

    @classmethod
    def parse(cls, key: str) -> KeyParts | None:
        """The fields of a key ``CacheKey.render`` made, or ``None`` for any other string."""
        prefix = KEY_PREFIX + ":"
        if not key.startswith(prefix):
            return None
        fields = key[len(prefix) :].split(":")
        if len(fields) != 4:
            return None
        return cls(*fields)

    def render(self) -> str:
        return ":".join((KEY_PREFIX, self.model, self.preprocess, self.layer, self.image))


def _component(value: str) -> str:
    """``value`` when short and plain, else ``~`` and 16 hex digits of its sha256."""
    if _SAFE_COMPONENT.fullmatch(value):
        return value
    return "~" + hashlib.sha256(value.encode()).hexdigest()[:16]


def image_key(*parts: bytes | memoryview) -> str:
    """The sha256 hex digest of an input's bytes (given in ``parts``, hashed as if joined,
    without copying them), the ``image_hash`` of a ``CacheKey``."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def key_digest(key: str) -> bytes:
    """The sha256 of ``key``, which every entry carries to say whose value it is."""
    return hashlib.sha256(key.encode()).digest()


def encoded_size(
    value: CachedActivation, store_dtype: StoreDtype = "float32", *, signed: bool = False
) -> int:
    """Length of ``encode(value, store_dtype, ...)``, computed from the shapes alone."""
    itemsize = _CODES[_CODE_OF[store_dtype]][2]
    size = _HEADER.size + (MAC_SIZE if signed else 0)
    for t, width in ((value.activation, itemsize), (value.logits, 4)):
        size += _DESCRIPTOR.size + _DIM.size * t.dim() + _NBYTES.size + t.numel() * width
    return size


def encode(
    value: CachedActivation,
    store_dtype: StoreDtype = "float32",
    *,
    key: str,
    signer: SigningKey | None = None,
) -> bytes:
    """Serialise ``value`` as the entry of ``key``, signed by ``signer`` when given; the
    activation is stored as ``store_dtype``, the logits as float32.

    float16 storage halves the size; activations beyond its range are clamped to it.
    """
    if store_dtype not in _CODE_OF:
        raise ValueError(f"store_dtype must be one of {sorted(_CODE_OF)}, got {store_dtype!r}")
    act = value.activation.detach().to(device="cpu", dtype=torch.float32)
    if store_dtype == "float16":
        act = act.clamp(-_FLOAT16_MAX, _FLOAT16_MAX)
    logits = value.logits.detach().to(device="cpu", dtype=torch.float32)
    body = bytearray(_HEADER.size)
    payloads: list[bytes] = []
    for t, name in ((act, store_dtype), (logits, "float32")):
        code = _CODE_OF[name]
        np_dtype = _CODES[code][1]
        data = np.ascontiguousarray(t.numpy(), dtype=np_dtype).tobytes()
        body += _DESCRIPTOR.pack(code, t.dim())
        for dim in t.shape:
            body += _DIM.pack(dim)
        body += _NBYTES.pack(len(data))
        payloads.append(data)
    for data in payloads:
        body += data
    crc = zlib.crc32(memoryview(body)[_HEADER.size :])
    flags = 0 if signer is None else FLAG_SIGNED
    _HEADER.pack_into(body, 0, MAGIC, FORMAT_VERSION, len(payloads), flags, crc, key_digest(key))
    if signer is not None:
        body += signer.sign(key, body)
    return bytes(body)


def decode(blob: bytes, *, key: str, signer: SigningKey | None = None) -> CachedActivation:
    """Parse the entry of ``key`` written by ``encode``; float32 tensors that own their
    (writable) memory. With ``signer``, only an entry it signed for ``key`` is accepted.

    Raises ``CacheFormatError`` for anything else (``ForeignEntryError`` for another key's
    entry, ``UnsignedEntryError``, ``SignatureError``): no pickle, no ``torch.load``.
    """
    view = memoryview(blob)
    if len(view) < _HEADER.size:
        raise CacheFormatError(f"truncated blob: {len(view)} bytes, header needs {_HEADER.size}")
    magic, version, count, flags, crc, digest = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise CacheFormatError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise CacheFormatError(f"unsupported format version {version}, expected {FORMAT_VERSION}")
    if count != len(_EXPECTED_NDIM) or flags & ~FLAG_SIGNED:
        raise CacheFormatError(f"unexpected tensor count {count} or flags {flags}")
    view = _authenticate(view, key, signed=bool(flags & FLAG_SIGNED), digest=digest, signer=signer)
    if zlib.crc32(view[_HEADER.size :]) != crc:
        raise CacheFormatError("checksum mismatch (corrupt or truncated blob)")
    offset = _HEADER.size
    layouts: list[tuple[str, list[int], int]] = []
    for expected_ndim in _EXPECTED_NDIM:
        code, ndim = _unpack(_DESCRIPTOR, view, offset)
        offset += _DESCRIPTOR.size
        if code not in _CODES:
            raise CacheFormatError(f"unknown dtype code {code}")
        if ndim != expected_ndim:
            raise CacheFormatError(f"tensor has {ndim} dimensions, expected {expected_ndim}")
        dims = [int(_unpack(_DIM, view, offset + i * _DIM.size)[0]) for i in range(ndim)]
        offset += ndim * _DIM.size
        (nbytes,) = _unpack(_NBYTES, view, offset)
        offset += _NBYTES.size
        _, np_dtype, itemsize = _CODES[code]
        if nbytes != math.prod(dims) * itemsize:
            raise CacheFormatError(f"payload of {nbytes} bytes does not match shape {dims}")
        layouts.append((np_dtype, dims, nbytes))
    if offset + sum(n for _, _, n in layouts) != len(view):
        raise CacheFormatError(
            f"blob is {len(view)} bytes, header says {offset + sum(n for _, _, n in layouts)}"
        )
    tensors: list[torch.Tensor] = []
    for np_dtype, dims, nbytes in layouts:
        array = np.frombuffer(view[offset : offset + nbytes], dtype=np_dtype)
        # astype copies into native-endian float32 memory the tensor owns (writable).
        tensors.append(torch.from_numpy(array.astype(np.float32)).reshape(dims))
        offset += nbytes
    return CachedActivation(tensors[0], tensors[1])


def _authenticate(
    view: memoryview, key: str, *, signed: bool, digest: bytes, signer: SigningKey | None
) -> memoryview:
    """The entry without its signature, once it is known to be ``key``'s (and, with a
    ``signer``, signed by it): checked before any descriptor is read."""
    end = len(view) - (MAC_SIZE if signed else 0)
    if end < _HEADER.size:
        raise CacheFormatError("truncated blob: no room for its signature")
    if digest != key_digest(key):
        raise ForeignEntryError("the entry was written under another key")
    if signer is not None:
        if not signed:
            raise UnsignedEntryError("the entry is not signed, and this server has a cache secret")
        if not signer.verify(key, view[:end], view[end:]):
            raise SignatureError("the entry's signature does not verify")
    return view[:end]


def _unpack(fmt: struct.Struct, view: memoryview, offset: int) -> tuple[int, ...]:
    if offset + fmt.size > len(view):
        raise CacheFormatError("truncated blob: descriptors run past its end")
    return fmt.unpack_from(view, offset)
