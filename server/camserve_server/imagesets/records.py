"""What an image set stores: its description and one record per member, in a versioned binary form.

A member record holds what the set's queries need and nothing more: the image's
embedding (cosine nearest neighbours), for each indexed layer the maximum of every
channel and where it was (maximally activating patches, after Zeiler & Fergus 2014),
the predicted class, a small encoded copy of the input to cut patches from, and an
optional tiny thumbnail for pixel-space neighbours.

A record is written as a fixed header and a sequence of fields; never pickle, so a
blob read back from a shared Redis can only become a ``MemberRecord`` or a
``RecordFormatError``. Layout (integers little-endian)::

    header   magic b"CSM1" | version u16 | flags u16 | crc32 u32 (of everything after the header)
    body     id str | image_hash str | predicted i32 | probability f32 | embedding array
             | layer count u16 | per layer: name str, maxima array (C,), positions array (C, 2)
             | image bytes | has pixels u8 [| pixels array (h, w, 3)]
    str      length u16 | utf-8 bytes          bytes   length u32 | raw bytes
    array    dtype code u8 | ndim u8 | ndim x dim u32 | raw little-endian payload
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import CamserveError, InvalidArgument

MAGIC = b"CSM1"
FORMAT_VERSION = 1

MAX_ID_CHARS = 200
MAX_LAYERS = 64
MAX_IMAGE_BYTES = 1 << 20  # the kept input copy is bounded
_MAX_NDIM = 4
SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")

_HEADER = struct.Struct("<4sHHI")
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_F32 = struct.Struct("<f")

# dtype code -> numpy little-endian dtype
_DTYPES: dict[int, np.dtype[np.generic]] = {
    1: np.dtype("<f4"),
    2: np.dtype("<i4"),
    3: np.dtype("u1"),
}
_CODE_OF = {dtype.str: code for code, dtype in _DTYPES.items()}


class RecordFormatError(ValueError):
    """A blob that is not a valid member record (magic, version, length or checksum)."""


class SetExists(CamserveError):
    """A set of that name exists with another model, layers or embedding layer."""

    status = "ALREADY_EXISTS"


class SetFull(CamserveError):
    """Adding would take a set past its image or byte limit."""

    status = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True)
class SetInfo:
    """A named image set: what indexed it, how large it is and its limits."""

    name: str
    model: str
    layers: tuple[str, ...]
    embedding_layer: str
    size: int
    bytes_used: int
    created: float
    max_images: int
    max_bytes: int

    def to_json(self) -> bytes:
        """The description as JSON (plain strings and numbers, safe to read back)."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, blob: bytes) -> SetInfo:
        """Parse ``to_json`` output; ``RecordFormatError`` for anything else."""
        try:
            raw = json.loads(blob)
            return cls(
                name=str(raw["name"]),
                model=str(raw["model"]),
                layers=tuple(str(layer) for layer in raw["layers"]),
                embedding_layer=str(raw["embedding_layer"]),
                size=int(raw["size"]),
                bytes_used=int(raw["bytes_used"]),
                created=float(raw["created"]),
                max_images=int(raw["max_images"]),
                max_bytes=int(raw["max_bytes"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RecordFormatError(f"unreadable set description: {exc}") from exc

    def same_shape(self, other: SetInfo) -> bool:
        """Whether ``other`` describes the same kind of set (model, layers, embedding layer)."""
        return (self.model, self.layers, self.embedding_layer) == (
            other.model,
            other.layers,
            other.embedding_layer,
        )


@dataclass
class MemberRecord:
    """One indexed image, named by its caller-chosen ``id``.

    ``positions[layer][c]`` is the ``(row, col)`` of ``maxima[layer][c]`` in that layer's map.
    ``image`` is the encoded input (PNG at the model's input size, or the original bytes
    when small); ``pixels`` an optional tiny uint8 ``(h, w, 3)`` thumbnail.
    """

    id: str
    image_hash: str
    embedding: np.ndarray
    maxima: dict[str, np.ndarray]
    positions: dict[str, np.ndarray]
    predicted: int
    probability: float
    image: bytes
    pixels: np.ndarray | None = field(default=None)


def check_set_name(name: str) -> str:
    """``name`` if it is a valid set name, else ``InvalidArgument`` saying what is allowed."""
    if not isinstance(name, str) or not SET_NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid set name {name!r}: 1 to 64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_member_id(member_id: str) -> str:
    """``member_id`` if it is a valid member id (1 to 200 printable characters)."""
    if (
        not isinstance(member_id, str)
        or not 1 <= len(member_id) <= MAX_ID_CHARS
        or not member_id.isprintable()
    ):
        raise InvalidArgument(
            f"invalid image id {member_id!r}: 1 to {MAX_ID_CHARS} printable characters"
        )
    return member_id


def encode_record(record: MemberRecord) -> bytes:
    """Serialise ``record`` (see the module docstring for the layout)."""
    if len(record.maxima) > MAX_LAYERS or set(record.maxima) != set(record.positions):
        raise ValueError("maxima and positions must name the same layers (at most 64)")
    if len(record.image) > MAX_IMAGE_BYTES:
        raise ValueError(f"kept image is {len(record.image)} bytes, at most {MAX_IMAGE_BYTES}")
    body = bytearray(_HEADER.size)
    _put_str(body, record.id)
    _put_str(body, record.image_hash)
    body += _I32.pack(int(record.predicted))
    body += _F32.pack(float(record.probability))
    _put_array(body, np.asarray(record.embedding, dtype="<f4"))
    body += _U16.pack(len(record.maxima))
    for layer in sorted(record.maxima):
        _put_str(body, layer)
        _put_array(body, np.asarray(record.maxima[layer], dtype="<f4"))
        _put_array(body, np.asarray(record.positions[layer], dtype="<i4"))
    body += _U32.pack(len(record.image))
    body += record.image
    if record.pixels is None:
        body += _U8.pack(0)
    else:
        body += _U8.pack(1)
        _put_array(body, np.asarray(record.pixels, dtype="u1"))
    crc = zlib.crc32(memoryview(body)[_HEADER.size :])
    _HEADER.pack_into(body, 0, MAGIC, FORMAT_VERSION, 0, crc)
    return bytes(body)


def decode_record(blob: bytes) -> MemberRecord:
    """Parse a blob written by ``encode_record``; arrays own their (writable) memory."""
    reader = _Reader(memoryview(blob))
    magic, version, flags, crc = reader.header()
    if magic != MAGIC:
        raise RecordFormatError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise RecordFormatError(f"unsupported record version {version}, expected {FORMAT_VERSION}")
    if flags != 0:
        raise RecordFormatError(f"unexpected flags {flags}")
    if zlib.crc32(reader.view[_HEADER.size :]) != crc:
        raise RecordFormatError("checksum mismatch (corrupt or truncated record)")
    member_id = reader.string()
    image_hash = reader.string()
    predicted = reader.integer(_I32)
    probability = reader.real()
    embedding = reader.array(ndim=1, dtype="<f4")
    n_layers = reader.integer(_U16)
    if n_layers > MAX_LAYERS:
        raise RecordFormatError(f"{n_layers} layers, at most {MAX_LAYERS}")
    maxima: dict[str, np.ndarray] = {}
    positions: dict[str, np.ndarray] = {}
    for _ in range(n_layers):
        layer = reader.string()
        maxima[layer] = reader.array(ndim=1, dtype="<f4")
        positions[layer] = reader.array(ndim=2, dtype="<i4")
        if positions[layer].shape != (maxima[layer].shape[0], 2):
            raise RecordFormatError(f"positions of {layer!r} do not match its maxima")
    image = reader.raw(reader.integer(_U32))
    has_pixels = reader.integer(_U8)
    pixels = reader.array(ndim=3, dtype="u1") if has_pixels else None
    if reader.offset != len(reader.view):
        raise RecordFormatError(f"{len(reader.view) - reader.offset} trailing bytes")
    return MemberRecord(
        id=member_id,
        image_hash=image_hash,
        embedding=embedding,
        maxima=maxima,
        positions=positions,
        predicted=int(predicted),
        probability=float(probability),
        image=image,
        pixels=pixels,
    )


def _put_str(body: bytearray, value: str) -> None:
    data = value.encode()
    if len(data) > 0xFFFF:
        raise ValueError("string field too long")
    body += _U16.pack(len(data))
    body += data


def _put_array(body: bytearray, array: np.ndarray) -> None:
    if array.ndim > _MAX_NDIM:
        raise ValueError(f"array has {array.ndim} dimensions, at most {_MAX_NDIM}")
    body += _U8.pack(_CODE_OF[array.dtype.str])
    body += _U8.pack(array.ndim)
    for dim in array.shape:
        body += _U32.pack(dim)
    body += np.ascontiguousarray(array).tobytes()


class _Reader:
    """Bounds-checked reads from a blob; every overrun is a ``RecordFormatError``."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.offset = 0

    def raw(self, n: int) -> bytes:
        if self.offset + n > len(self.view):
            raise RecordFormatError("truncated record")
        data = bytes(self.view[self.offset : self.offset + n])
        self.offset += n
        return data

    def header(self) -> tuple[bytes, int, int, int]:
        magic, version, flags, crc = _HEADER.unpack(self.raw(_HEADER.size))
        return bytes(magic), int(version), int(flags), int(crc)

    def integer(self, fmt: struct.Struct) -> int:
        return int(fmt.unpack(self.raw(fmt.size))[0])

    def real(self) -> float:
        return float(_F32.unpack(self.raw(_F32.size))[0])

    def string(self) -> str:
        try:
            return self.raw(self.integer(_U16)).decode()
        except UnicodeDecodeError as exc:
            raise RecordFormatError("string field is not utf-8") from exc

    def array(self, *, ndim: int, dtype: str) -> np.ndarray:
        code, got_ndim = self.integer(_U8), self.integer(_U8)
        expected = np.dtype(dtype)
        if code not in _DTYPES or _DTYPES[code].str != expected.str:
            raise RecordFormatError(f"unexpected dtype code {code}, expected {dtype}")
        if got_ndim != ndim:
            raise RecordFormatError(f"array has {got_ndim} dimensions, expected {ndim}")
        dims = [self.integer(_U32) for _ in range(ndim)]
        data = self.raw(math.prod(dims) * expected.itemsize)
        # astype copies into native-endian memory the array owns (writable).
        return np.frombuffer(data, dtype=expected).astype(expected.newbyteorder("=")).reshape(dims)
