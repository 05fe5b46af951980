"""numpy arrays to and from ``camserve.v1.Tensor`` messages.

A ``Tensor`` carries ``shape``, ``dtype`` (float32, float16 or uint8) and
``data``: the elements, little-endian, in C order, with no padding. Decoding
checks that the three agree and raises ``ValueError`` when they do not.

``from_proto`` wraps the message's bytes without copying them (``np.frombuffer``),
so its result is read-only unless ``copy=True``.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from camserve.v1 import explain_pb2 as pb

# Wire dtype -> numpy dtype, as laid out on the wire (little-endian).
_WIRE: Final[dict[pb.DType.ValueType, np.dtype[Any]]] = {
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
    pb.DTYPE_FLOAT16: np.dtype("<f2"),
    pb.DTYPE_UINT8: np.dtype("u1"),
}
# numpy dtype (native byte order) -> wire dtype.
_CODES: Final[dict[np.dtype[Any], pb.DType.ValueType]] = {
    np.dtype(np.float32): pb.DTYPE_FLOAT32,
    np.dtype(np.float16): pb.DTYPE_FLOAT16,
    np.dtype(np.uint8): pb.DTYPE_UINT8,
}
SUPPORTED: Final[tuple[str, ...]] = ("float32", "float16", "uint8")


def _dtype_name(code: int) -> str:
    try:
        return pb.DType.Name(pb.DType.ValueType(code))
    except ValueError:
        return str(code)


def numpy_dtype(code: int) -> np.dtype[Any]:
    """The numpy dtype (native byte order) of a wire ``DType`` value."""
    wire = _WIRE.get(pb.DType.ValueType(code))
    if wire is None:
        if code == pb.DTYPE_UNSPECIFIED:
            raise ValueError("tensor dtype is unset (DTYPE_UNSPECIFIED)")
        raise ValueError(
            f"unsupported tensor dtype {_dtype_name(code)}; supported: {', '.join(SUPPORTED)}"
        )
    return wire.newbyteorder("=")


def proto_dtype(dtype: npt.DTypeLike) -> pb.DType.ValueType:
    """The wire ``DType`` value of a numpy dtype (either byte order)."""
    native = np.dtype(dtype)
    native = native.newbyteorder("=") if native.byteorder in "<>" else native
    code = _CODES.get(native)
    if code is None:
        raise ValueError(
            f"unsupported array dtype {native}; cast to one of {', '.join(SUPPORTED)} first"
        )
    return code


def to_proto(array: npt.ArrayLike, dtype: npt.DTypeLike | None = None) -> pb.Tensor:
    """Encode ``array`` as a ``Tensor``.

    The array must be float32, float16 or uint8 (any byte order, any strides);
    pass ``dtype`` to cast it first. Other dtypes raise ``ValueError``: nothing
    is converted silently. The bytes are copied once, into the message.
    """
    values = np.asarray(array) if dtype is None else np.asarray(array).astype(dtype, copy=False)
    code = proto_dtype(values.dtype)
    wire = _WIRE[code]
    data = np.ascontiguousarray(values, dtype=wire).tobytes()
    return pb.Tensor(shape=[int(n) for n in values.shape], dtype=code, data=data)


def from_proto(message: pb.Tensor, *, copy: bool = False) -> npt.NDArray[Any]:
    """Decode a ``Tensor`` into an array of its shape and dtype.

    Without ``copy`` the array is a read-only view of the message's bytes (on a
    little-endian machine); with it, a writable array that owns its memory.

    Raises ``ValueError`` when the dtype is unset or unknown, a dimension is
    negative, or the data length is not ``product(shape) * itemsize``.
    """
    native = numpy_dtype(message.dtype)
    shape = tuple(int(n) for n in message.shape)
    if any(n < 0 for n in shape):
        raise ValueError(f"tensor shape {list(shape)} has a negative dimension")
    data = message.data
    expected = math.prod(shape) * native.itemsize
    if len(data) != expected:
        raise ValueError(
            f"tensor data has {len(data)} bytes, but shape {list(shape)} of "
            f"{native.name} needs {expected}"
        )
    wire = _WIRE[message.dtype]
    array = np.frombuffer(data, dtype=wire).reshape(shape)
    if wire != native:  # a big-endian machine: swap into native order (a copy)
        return array.astype(native)
    return array.copy() if copy else array


__all__ = ["SUPPORTED", "from_proto", "numpy_dtype", "proto_dtype", "to_proto"]
