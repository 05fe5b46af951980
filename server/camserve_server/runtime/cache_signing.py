"""Signatures of shared-cache entries: HMAC-SHA256 over the key and the value.

With a cache secret, whoever can write to Redis but lacks the secret cannot make a
server serve an answer of their choosing: an entry is served only if its signature,
computed over the key it is read under and every byte before the signature, verifies.
The secret is held by a ``SigningKey`` whose ``repr`` never shows it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from ..errors import InvalidArgument

MAC_SIZE = hashlib.sha256().digest_size
MIN_SECRET_BYTES = 16
_CONTEXT = b"camserve-cache-entry\x00"
_LENGTH = struct.Struct("<I")


class SigningKey:
    """The cache secret: signs and verifies entries; printed, logged or raised, it shows nothing."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(raw) < MIN_SECRET_BYTES:
            # Never echo the value, only the length it needs; InvalidArgument, so the CLI
            # says it in one line and exits 2.
            raise InvalidArgument(f"cache_secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = raw

    def sign(self, key: str, data: bytes | bytearray | memoryview) -> bytes:
        """The signature of ``data`` stored under ``key``."""
        encoded = key.encode()
        mac = hmac.new(self._secret, _CONTEXT, hashlib.sha256)
        mac.update(_LENGTH.pack(len(encoded)))  # length-prefixed: key and data cannot trade bytes
        mac.update(encoded)
        mac.update(data)
        return mac.digest()

    def verify(
        self, key: str, data: bytes | bytearray | memoryview, signature: bytes | memoryview
    ) -> bool:
        """Whether ``signature`` is ``sign(key, data)``, compared in constant time."""
        return hmac.compare_digest(self.sign(key, data), bytes(signature))

    def __repr__(self) -> str:
        return "SigningKey(<redacted>)"

    __str__ = __repr__


def signing_key(secret: str | bytes | SigningKey | None) -> SigningKey | None:
    """``secret`` as a ``SigningKey``; ``None``: entries are neither signed nor verified.

    An empty or short secret raises ``InvalidArgument`` (a ``ValueError``) rather than
    quietly signing with it."""
    if secret is None or isinstance(secret, SigningKey):
        return secret
    return SigningKey(secret)
