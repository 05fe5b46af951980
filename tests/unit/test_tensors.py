"""``camserve.tensors``: numpy arrays to ``Tensor`` messages and back."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from camserve import tensors
from camserve.v1 import explain_pb2 as pb

CODES = {"float32": pb.DTYPE_FLOAT32, "float16": pb.DTYPE_FLOAT16, "uint8": pb.DTYPE_UINT8}


def _sample(dtype: str, shape: tuple[int, ...]) -> npt.NDArray[Any]:
    rng = np.random.default_rng(0)
    if dtype == "uint8":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
@pytest.mark.parametrize("shape", [(3, 8, 5), (7,), (2, 0, 4), ()])
def test_round_trip(dtype: str, shape: tuple[int, ...]) -> None:
    array = _sample(dtype, shape)
    message = tensors.to_proto(array)
    assert list(message.shape) == list(shape)
    assert message.dtype == CODES[dtype]
    assert len(message.data) == array.size * array.itemsize
    back = tensors.from_proto(pb.Tensor.FromString(message.SerializeToString()))
    assert back.dtype == np.dtype(dtype)
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)


def test_data_is_little_endian_c_order() -> None:
    array = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    assert tensors.to_proto(array).data == struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    assert tensors.to_proto(array.T).data == struct.pack("<4f", 1.0, 3.0, 2.0, 4.0)
    assert tensors.to_proto(array.astype(np.float16)).data == struct.pack("<4e", 1, 2, 3, 4)


@pytest.mark.parametrize("dtype", [">f4", ">f2"])
def test_big_endian_input_is_written_little_endian(dtype: str) -> None:
    array = np.arange(6, dtype=dtype).reshape(2, 3)
    message = tensors.to_proto(array)
    assert message.data == np.arange(6, dtype="<" + dtype[1:]).tobytes()
    back = tensors.from_proto(message)
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_non_contiguous_input() -> None:
    array = _sample("float32", (4, 6, 6))[:, ::2, 1::2]
    assert not array.flags.c_contiguous
    np.testing.assert_array_equal(tensors.from_proto(tensors.to_proto(array)), array)


def test_decoding_is_a_read_only_view_unless_copied() -> None:
    message = tensors.to_proto(_sample("float32", (3, 4, 4)))
    view = tensors.from_proto(message)
    assert not view.flags.writeable
    assert not view.flags.owndata
    copied = tensors.from_proto(message, copy=True)
    assert copied.flags.writeable
    assert copied.flags.owndata
    copied[0, 0, 0] += 1.0
    np.testing.assert_array_equal(tensors.from_proto(message), view)


def test_explicit_cast() -> None:
    array = np.linspace(0.0, 1.0, 5)  # float64
    message = tensors.to_proto(array, dtype=np.float32)
    assert message.dtype == pb.DTYPE_FLOAT32
    np.testing.assert_allclose(tensors.from_proto(message), array, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "int32", "int64", "bool", "complex64", "int8"])
def test_unsupported_array_dtypes_are_refused(dtype: str) -> None:
    with pytest.raises(ValueError, match="unsupported array dtype"):
        tensors.to_proto(np.zeros((2, 2), dtype=dtype))


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (pb.Tensor(shape=[2], data=b"\0" * 8), "unset"),
        (pb.Tensor(shape=[2], dtype=9, data=b"\0" * 8), "unsupported tensor dtype"),  # type: ignore[arg-type]
        (pb.Tensor(shape=[2, 3], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 23), "23 bytes"),
        (pb.Tensor(shape=[2, 3], dtype=pb.DTYPE_FLOAT32, data=b"\0" * 25), "needs 24"),
        (pb.Tensor(shape=[4], dtype=pb.DTYPE_FLOAT16, data=b"\0" * 4), "needs 8"),
        (pb.Tensor(shape=[0, 3], dtype=pb.DTYPE_UINT8, data=b"\0"), "needs 0"),
        (pb.Tensor(dtype=pb.DTYPE_UINT8, data=b""), "needs 1"),
        (pb.Tensor(shape=[-2, -3], dtype=pb.DTYPE_UINT8, data=b"\0" * 6), "negative"),
        (pb.Tensor(shape=[1 << 40, 1 << 40], dtype=pb.DTYPE_UINT8, data=b"\0"), "bytes"),
    ],
)
def test_inconsistent_messages_are_refused(message: pb.Tensor, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        tensors.from_proto(message)


def test_dtype_mapping() -> None:
    for name, code in CODES.items():
        assert tensors.proto_dtype(name) == code
        assert tensors.numpy_dtype(code) == np.dtype(name)
    assert tensors.proto_dtype(">f4") == pb.DTYPE_FLOAT32
    with pytest.raises(ValueError, match="unset"):
        tensors.numpy_dtype(pb.DTYPE_UNSPECIFIED)
