"""The activation cache's keys and binary value format: round trips, rejects, no pickle."""

from __future__ import annotations

import ast
import hashlib
import io
import pickle
import struct
import zlib
from pathlib import Path
from typing import NoReturn

import pytest
import torch

from camserve_server.runtime import cache_format
from camserve_server.runtime.cache_format import (
    FORMAT_VERSION,
    MAGIC,
    CachedActivation,
    CacheFormatError,
    CacheKey,
    ForeignEntryError,
    KeyParts,
    SignatureError,
    UnsignedEntryError,
    decode,
    encode,
    encoded_size,
    image_key,
)
from camserve_server.runtime.cache_signing import SigningKey, signing_key

RUNTIME = Path(cache_format.__file__).parent
KEY = CacheKey("m", "w" * 64, "p", "layer4", image_key(b"image")).render()
OTHER_KEY = CacheKey("m", "w" * 64, "p", "layer4", image_key(b"another image")).render()
HEADER_SIZE = 44  # magic, version, count, flags, crc32, key digest
SECRET = "s3cret-" + "x" * 16


def _value(k: int = 8, h: int = 7, w: int = 5, c: int = 10) -> CachedActivation:
    g = torch.Generator().manual_seed(0)
    return CachedActivation(
        torch.randn(k, h, w, generator=g) * 10, torch.randn(c, generator=g, dtype=torch.float32)
    )


def test_float32_round_trip_is_exact() -> None:
    value = _value()
    blob = encode(value, key=KEY)
    assert blob[:4] == MAGIC
    assert len(blob) == encoded_size(value)
    out = decode(blob, key=KEY)
    assert out.activation.dtype == torch.float32
    assert out.logits.dtype == torch.float32
    assert out.activation.shape == (8, 7, 5)
    assert out.logits.shape == (10,)
    assert torch.equal(out.activation, value.activation)
    assert torch.equal(out.logits, value.logits)


def test_float16_storage_decodes_to_float32() -> None:
    value = _value()
    value.activation[0, 0, 0] = 1e6  # beyond float16: clamped, never inf
    blob = encode(value, "float16", key=KEY)
    assert len(blob) == encoded_size(value, "float16") < len(encode(value, key=KEY))
    out = decode(blob, key=KEY)
    assert out.activation.dtype == torch.float32
    assert out.activation[0, 0, 0].item() == 65504.0
    rest = (slice(1, None),)
    torch.testing.assert_close(out.activation[rest], value.activation[rest], rtol=1e-3, atol=1e-2)
    assert torch.equal(out.logits, value.logits)  # logits always stored as float32


def test_decoded_tensors_own_writable_memory() -> None:
    blob = encode(_value(), key=KEY)
    out = decode(blob, key=KEY)
    out.activation.add_(1.0)  # no "non-writable buffer" warning, no error
    out.logits.zero_()
    assert out.activation.is_contiguous()
    assert torch.equal(decode(blob, key=KEY).activation + 1.0, out.activation)


def test_encode_accepts_views_and_other_dtypes() -> None:
    batch = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    value = CachedActivation(batch[1].transpose(1, 2), batch[2, 0, 0].to(torch.bfloat16))
    out = decode(encode(value, key=KEY), key=KEY)
    assert torch.equal(out.activation, batch[1].transpose(1, 2).float())
    assert out.logits.shape == (2,)


def test_empty_dimensions_round_trip() -> None:
    value = CachedActivation(torch.zeros(0, 3, 3), torch.zeros(0))
    out = decode(encode(value, key=KEY), key=KEY)
    assert out.activation.shape == (0, 3, 3)
    assert out.logits.shape == (0,)


def test_wrong_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="expected activation"):
        CachedActivation(torch.zeros(3, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="store_dtype"):
        encode(_value(), "int8", key=KEY)  # type: ignore[arg-type]


def test_truncated_blobs_are_rejected() -> None:
    blob = encode(_value(2, 2, 2, 3), key=KEY)
    for n in range(len(blob)):
        with pytest.raises(CacheFormatError):
            decode(blob[:n], key=KEY)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"garbage",
        b"\x00" * 256,
        b"CSV1" + b"\xff" * 64,
        bytes(range(256)) * 4,
    ],
)
def test_garbage_is_rejected(blob: bytes) -> None:
    with pytest.raises(CacheFormatError):
        decode(blob, key=KEY)


def test_bad_magic_is_rejected() -> None:
    blob = bytearray(encode(_value(), key=KEY))
    blob[:4] = b"XXXX"
    with pytest.raises(CacheFormatError, match="magic"):
        decode(bytes(blob), key=KEY)


@pytest.mark.parametrize("version", [0, FORMAT_VERSION - 1, FORMAT_VERSION + 1, 0xFFFF])
def test_other_versions_are_rejected(version: int) -> None:
    blob = bytearray(encode(_value(), key=KEY))
    struct.pack_into("<H", blob, 4, version)
    with pytest.raises(CacheFormatError, match="version"):
        decode(bytes(blob), key=KEY)


def test_flipped_payload_byte_and_trailing_bytes_are_rejected() -> None:
    blob = bytearray(encode(_value(), key=KEY))
    blob[-1] ^= 0xFF
    with pytest.raises(CacheFormatError, match="checksum"):
        decode(bytes(blob), key=KEY)
    with pytest.raises(CacheFormatError):
        decode(encode(_value(), key=KEY) + b"\x00", key=KEY)


def test_length_mismatch_with_valid_checksum_is_rejected() -> None:
    blob = bytearray(encode(_value(), key=KEY) + b"\x00\x00\x00\x00")
    struct.pack_into("<I", blob, 8, zlib.crc32(blob[HEADER_SIZE:]))  # a consistent checksum
    with pytest.raises(CacheFormatError, match="bytes"):
        decode(bytes(blob), key=KEY)


def test_a_version_1_entry_is_refused() -> None:
    """The layout before entries carried their key: a decode error, never a crash."""
    value = _value(2, 2, 2, 3)
    descriptors, payloads = b"", b""
    for t in (value.activation, value.logits):
        descriptors += struct.pack("<BB", 1, t.dim()) + b"".join(
            struct.pack("<I", d) for d in t.shape
        )
        data = t.numpy().astype("<f4").tobytes()
        descriptors += struct.pack("<Q", len(data))
        payloads += data
    body = descriptors + payloads
    blob = struct.pack("<4sHBBI", b"CSV1", 1, 2, 0, zlib.crc32(body)) + body
    with pytest.raises(CacheFormatError, match="version 1") as caught:
        decode(blob, key=KEY)
    assert caught.value.kind == "decode"


def test_an_entry_carries_its_key_and_is_refused_under_another() -> None:
    blob = encode(_value(), key=KEY)
    assert hashlib.sha256(KEY.encode()).digest() in blob[:HEADER_SIZE]
    with pytest.raises(ForeignEntryError, match="another key") as caught:
        decode(blob, key=OTHER_KEY)
    assert caught.value.kind == "foreign"
    signer = SigningKey(SECRET)
    with pytest.raises(ForeignEntryError):
        decode(encode(_value(), key=KEY, signer=signer), key=OTHER_KEY, signer=signer)


def test_signed_entries_round_trip_and_any_change_is_refused() -> None:
    signer = SigningKey(SECRET)
    value = _value(2, 3, 3, 4)
    blob = encode(value, key=KEY, signer=signer)
    assert len(blob) == encoded_size(value, signed=True) == len(encode(value, key=KEY)) + 32
    assert SECRET.encode() not in blob
    assert torch.equal(decode(blob, key=KEY, signer=signer).logits, value.logits)
    assert torch.equal(decode(blob, key=KEY).logits, value.logits)  # no secret: not verified
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises(CacheFormatError):
            decode(bytes(tampered), key=KEY, signer=signer)
    payload = bytearray(blob)
    payload[-40] ^= 0x01  # a logit, with a checksum made to match: only the signature tells
    struct.pack_into("<I", payload, 8, zlib.crc32(payload[HEADER_SIZE:-32]))
    with pytest.raises(SignatureError, match="does not verify") as caught:
        decode(bytes(payload), key=KEY, signer=signer)
    assert caught.value.kind == "signature"


def test_with_a_secret_unsigned_or_otherwise_signed_entries_are_refused() -> None:
    signer = SigningKey(SECRET)
    with pytest.raises(UnsignedEntryError) as unsigned:
        decode(encode(_value(), key=KEY), key=KEY, signer=signer)
    assert unsigned.value.kind == "unsigned"
    other = encode(_value(), key=KEY, signer=SigningKey("another secret, long enough"))
    with pytest.raises(SignatureError):
        decode(other, key=KEY, signer=signer)
    stripped = bytearray(encode(_value(), key=KEY, signer=signer)[:-32])
    stripped[7] = 0  # the flags say unsigned now
    with pytest.raises(UnsignedEntryError):
        decode(bytes(stripped), key=KEY, signer=signer)


def test_the_secret_never_shows() -> None:
    signer = SigningKey(SECRET)
    assert SECRET not in repr(signer)
    assert SECRET not in str(signer)
    assert SECRET not in f"{[signer]}"
    with pytest.raises(ValueError, match="at least 16 bytes"):
        signing_key("")  # an empty secret is a mistake, not "no secret"
    with pytest.raises(ValueError, match="at least 16 bytes") as caught:
        signing_key("too short")
    assert "too short" not in str(caught.value)
    assert signing_key(None) is None
    assert signing_key(signer) is signer


def test_key_parts_parse_what_render_makes() -> None:
    key = CacheKey("my model:v2", "d" * 64, "p", "features.3", image_key(b"x"), "bfloat16")
    parts = KeyParts.parse(key.render())
    assert parts == key.parts()
    assert parts is not None
    assert parts.render() == key.render()
    for other in ("k", "camserve:v1:a@b:c:d:e", "camserve:v2:a@b:c:d", "camserve:v2:a:b:c:d:e"):
        assert KeyParts.parse(other) is None


def test_pickled_and_torch_saved_blobs_are_rejected() -> None:
    value = _value()
    with pytest.raises(CacheFormatError):
        decode(pickle.dumps(value), key=KEY)
    with pytest.raises(CacheFormatError):
        decode(pickle.dumps({"activation": value.activation, "logits": value.logits}), key=KEY)
    buffer = io.BytesIO()
    torch.save(value.activation, buffer)
    with pytest.raises(CacheFormatError):
        decode(buffer.getvalue(), key=KEY)


def test_decoding_never_unpickles(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("pickle or torch.load was called")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    value = _value()
    assert torch.equal(decode(encode(value, key=KEY), key=KEY).activation, value.activation)


def test_cache_modules_do_not_import_pickle_or_use_torch_load() -> None:
    files = sorted(RUNTIME.glob("cache*.py"))
    assert len(files) >= 2
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                names = []
            for name in names:
                assert name.split(".")[0] not in {"pickle", "dill", "marshal", "shelve"}, path
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert (node.value.id, node.attr) != ("torch", "load"), path


def test_image_key_is_sha256_hex() -> None:
    assert image_key(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert image_key(b"a", memoryview(b"bc")) == image_key(b"abc")  # parts hash as if joined


def test_key_format() -> None:
    key = CacheKey("resnet50", "ab" * 32, "resize=224;mean=0.485", "layer4.2", image_key(b"x"))
    text = key.render()
    preprocess = hashlib.sha256(b"resize=224;mean=0.485").hexdigest()[:16]
    assert text == f"camserve:v2:resnet50@{'ab' * 8}:{preprocess}:layer4.2:{image_key(b'x')}"
    assert str(key) == text


def test_key_hashes_long_or_odd_components() -> None:
    long_layer = "features." + "x" * 200
    key = CacheKey("my model:v2", "d" * 64, "p", long_layer, image_key(b"x")).render()
    assert len(key) < 200
    assert "my model" not in key
    assert long_layer not in key
    parts = key.split(":")
    assert len(parts) == 6  # a ':' in a component never adds a field
    other = CacheKey("my model:v3", "d" * 64, "p", long_layer, image_key(b"x")).render()
    assert other != key


def test_every_component_changes_the_key() -> None:
    base = ("m", "w" * 64, "p", "layer", image_key(b"a"))
    keys = {CacheKey(*base).render()}
    for i, changed in enumerate(("m2", "v" * 64, "p2", "layer2", image_key(b"b"))):
        fields = list(base)
        fields[i] = changed
        keys.add(CacheKey(*fields).render())
    assert len(keys) == 6
