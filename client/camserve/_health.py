"""The standard ``grpc.health.v1.Health/Check`` call, without grpcio-health-checking.

Its two messages are tiny (one string field, one enum field), so they are
encoded and decoded here by hand rather than adding a dependency.
"""

from __future__ import annotations

from typing import Final

from camserve.errors import InternalError

CHECK_METHOD: Final = "/grpc.health.v1.Health/Check"
STATUSES: Final = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise InternalError("malformed health check response")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def encode_request(service: str) -> bytes:
    """A ``HealthCheckRequest`` for ``service`` ("" = the whole server)."""
    raw = service.encode()
    return b"\x0a" + _varint(len(raw)) + raw if raw else b""


def decode_response(data: bytes) -> str:
    """A ``HealthCheckResponse``'s status name (``SERVING``, ``NOT_SERVING``, ...)."""
    status, pos = 0, 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
            if field == 1:
                status = value
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise InternalError("malformed health check response")
    if pos > len(data):
        raise InternalError("malformed health check response")
    return STATUSES[status] if status < len(STATUSES) else f"STATUS_{status}"


__all__ = ["CHECK_METHOD", "STATUSES", "decode_response", "encode_request"]
