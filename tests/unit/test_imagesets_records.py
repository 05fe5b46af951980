"""Image-set member records: exact round trips, and every damaged blob refused (never pickle)."""

from __future__ import annotations

import ast
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from camserve_server.errors import InvalidArgument
from camserve_server.imagesets import records
from camserve_server.imagesets.records import (
    FORMAT_VERSION,
    MAGIC,
    MemberRecord,
    RecordFormatError,
    SetInfo,
    check_member_id,
    check_set_name,
    decode_record,
    encode_record,
)


def _record(pixels: bool = True) -> MemberRecord:
    rng = np.random.default_rng(0)
    return MemberRecord(
        id="cat #1.png",
        image_hash="ab" * 32,
        embedding=rng.normal(size=64).astype(np.float32),
        maxima={
            "layer1": rng.normal(size=16).astype(np.float32),
            "layer2": rng.normal(size=32).astype(np.float32),
        },
        positions={
            "layer1": rng.integers(0, 32, size=(16, 2)).astype(np.int32),
            "layer2": rng.integers(0, 16, size=(32, 2)).astype(np.int32),
        },
        predicted=3,
        probability=0.75,
        image=b"\x89PNG fake bytes",
        pixels=rng.integers(0, 256, size=(32, 32, 3)).astype(np.uint8) if pixels else None,
    )


@pytest.mark.parametrize("pixels", [True, False])
def test_round_trip_is_exact(pixels: bool) -> None:
    record = _record(pixels)
    back = decode_record(encode_record(record))
    assert (back.id, back.image_hash, back.predicted, back.image) == (
        record.id,
        record.image_hash,
        record.predicted,
        record.image,
    )
    assert back.probability == pytest.approx(record.probability)
    np.testing.assert_array_equal(back.embedding, record.embedding)
    assert back.embedding.dtype == np.float32 and back.embedding.flags.writeable
    assert set(back.maxima) == set(record.maxima) == set(back.positions)
    for layer in record.maxima:
        np.testing.assert_array_equal(back.maxima[layer], record.maxima[layer])
        np.testing.assert_array_equal(back.positions[layer], record.positions[layer])
        assert back.positions[layer].dtype == np.int32
    if pixels:
        assert back.pixels is not None and record.pixels is not None
        np.testing.assert_array_equal(back.pixels, record.pixels)
    else:
        assert back.pixels is None


def test_header_names_magic_and_version() -> None:
    blob = encode_record(_record())
    magic, version, flags, crc = struct.unpack_from("<4sHHI", blob)
    assert (magic, version, flags) == (MAGIC, FORMAT_VERSION, 0)
    assert crc == zlib.crc32(blob[struct.calcsize("<4sHHI") :])


def _reseal(body: bytearray) -> bytes:
    """Recompute the checksum so that a structural defect, not the crc, must be caught."""
    struct.pack_into("<I", body, 8, zlib.crc32(bytes(body[12:])))
    return bytes(body)


def test_damaged_blobs_are_refused() -> None:
    blob = encode_record(_record())
    with pytest.raises(RecordFormatError, match="magic"):
        decode_record(b"XXXX" + blob[4:])
    with pytest.raises(RecordFormatError, match="version"):
        decode_record(blob[:4] + struct.pack("<H", FORMAT_VERSION + 1) + blob[6:])
    flipped = bytearray(blob)
    flipped[-1] ^= 0xFF
    with pytest.raises(RecordFormatError, match="checksum"):
        decode_record(bytes(flipped))
    with pytest.raises(RecordFormatError):
        decode_record(blob[:-5])
    with pytest.raises(RecordFormatError, match="truncated"):
        decode_record(blob[:6])
    with pytest.raises(RecordFormatError, match="trailing"):
        decode_record(_reseal(bytearray(blob) + b"extra"))
    with pytest.raises(RecordFormatError):
        decode_record(pickle.dumps(_record()))


def test_module_never_unpickles() -> None:
    tree = ast.parse(Path(records.__file__).read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert "pickle" not in names | imported


def test_set_info_json_round_trip() -> None:
    info = SetInfo("shapes", "demo", ("a", "b"), "fc:input", 3, 100, 1.5, 10, 1000)
    assert SetInfo.from_json(info.to_json()) == info
    with pytest.raises(RecordFormatError):
        SetInfo.from_json(b'{"name": "x"}')


def test_names_and_ids_are_checked() -> None:
    assert check_set_name("shapes-2024.v1") == "shapes-2024.v1"
    for bad in ("", "-x", "a b", "x" * 65, "a{b}", "a:b"):
        with pytest.raises(InvalidArgument, match="1 to 64 characters"):
            check_set_name(bad)
    assert check_member_id("dir/cat 1.png") == "dir/cat 1.png"
    for bad_id in ("", "x" * 201, "a\nb"):
        with pytest.raises(InvalidArgument, match="1 to 200"):
            check_member_id(bad_id)
