"""z-base-32 and hypercore-id-encoding: core ids and the key strings users paste.

`encode(data)` / `decode(text)` follow the npm `z32` package; `encode_id(key)` is `core.id`;
`decode_key(text)` accepts what `hypercore-id-encoding.decode` accepts (§6.5 of core-crypto.md).
"""

from __future__ import annotations

import re

from hyperfs.core.crypto import check_key
from hyperfs.errors import InvalidKeyError

ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
_VALUES = {c: i for i, c in enumerate(ALPHABET)}
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_URL = re.compile(r"(?:hyper|pear)://([^/?#]*)")


def encode(data: bytes) -> str:
    """z-base-32 of `data`: 5-bit groups, MSB first, last group zero-padded, no `=`."""
    bits = len(data) * 8
    if not bits:
        return ""
    chars = (bits + 4) // 5
    n = int.from_bytes(data, "big") << (chars * 5 - bits)
    return "".join(ALPHABET[(n >> (5 * (chars - 1 - i))) & 31] for i in range(chars))


def decode(text: str) -> bytes:
    """The bytes of a z-base-32 string; InvalidKeyError on a character outside the alphabet."""
    n = 0
    for pos, char in enumerate(text):
        value = _VALUES.get(char)
        if value is None:
            raise InvalidKeyError(f"invalid z-base-32 character {char!r} at position {pos}")
        n = (n << 5) | value
    size = len(text) * 5 // 8
    return (n >> (len(text) * 5 - size * 8)).to_bytes(size, "big")


def encode_id(key: bytes) -> str:
    """The 52-character id of a 32-byte core key (`core.id`)."""
    return encode(check_key(key, 32, "core key"))


def decode_key(value: str | bytes | bytearray | memoryview) -> bytes:
    """A 32-byte key from a z32 id, 64-char hex, `hyper://`/`pear://` URL, or 32 bytes."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return check_key(value, 32, "key")
    if not isinstance(value, str):
        raise InvalidKeyError(f"a key must be text or 32 bytes, got {type(value).__name__}")
    text = value.strip()
    url = _URL.match(text)
    if url:
        text = url.group(1)
    if len(text) == 64 and _HEX64.fullmatch(text):
        return bytes.fromhex(text)
    if len(text) != 52:
        raise InvalidKeyError(
            f"a key must be a 52-character id or 64 hex characters, got {len(text)} characters"
        )
    return decode(text)
