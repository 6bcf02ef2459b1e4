"""Hypercore block encryption: XSalsa20 with an 8-byte blinded fork prefix (`default-encryption.js`).

XSalsa20 comes from libsodium through ctypes: PyNaCl's bundled `_sodium` library exports
`crypto_stream_xsalsa20_xor` (PyNaCl has no Python binding for it); the system libsodium is the
fallback. See `shared/spec/core-crypto.md` §9.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from pathlib import Path

import nacl

from hyperfs.core import caps
from hyperfs.core.crypto import check_key, hash32, keyed_hash32
from hyperfs.errors import DecodingError, HyperfsError

PADDING = 8
_ZERO16 = bytes(16)
_ZERO8 = bytes(8)
_U64 = struct.Struct("<Q")


def _load_xsalsa20() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    candidates = [str(p) for p in Path(nacl.__file__).parent.glob("_sodium*.so")]
    system = ctypes.util.find_library("sodium")
    if system:
        candidates.append(system)
    for path in candidates:
        try:
            fn = ctypes.CDLL(path).crypto_stream_xsalsa20_xor
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_char_p]
        fn.restype = ctypes.c_int
        return fn
    raise HyperfsError("no libsodium with crypto_stream_xsalsa20_xor found (PyNaCl or libsodium23)")


_xsalsa20_xor = _load_xsalsa20()


def _xor_into(out: bytearray, offset: int, data: bytes, nonce: bytes, key: bytes) -> None:
    """Write `data XOR XSalsa20(key, nonce)` into `out[offset:offset+len(data)]`."""
    if not data:
        return
    target = (ctypes.c_char * len(data)).from_buffer(out, offset)
    _xsalsa20_xor(ctypes.addressof(target), data, len(data), nonce, key)


def xsalsa20_xor(data: bytes, nonce: bytes, key: bytes) -> bytes:
    """`data` XOR the XSalsa20 keystream of (key, 24-byte nonce) from byte 0."""
    out = bytearray(len(data))
    _xor_into(out, 0, bytes(data), nonce, key)
    return bytes(out)


def block_key(core_key: bytes, encryption_key: bytes, *, compat: bool = False, is_block_key: bool = False) -> bytes:
    """The key blocks are encrypted with (`deriveKeys`: default, compat or block-key mode)."""
    check_key(encryption_key, 32, "encryption key")
    if is_block_key:
        return bytes(encryption_key)
    if compat:
        return keyed_hash32(core_key, encryption_key)
    return hash32(caps.DEFAULT_ENCRYPTION, core_key, encryption_key)


class BlockEncryption:
    """Encrypts and decrypts the blocks of one core (`blockKey`, `blindingKey = B(blockKey)`)."""

    padding = PADDING

    def __init__(self, block_key: bytes) -> None:
        self.block_key = check_key(block_key, 32, "block key")
        self.blinding_key = hash32(self.block_key)

    @classmethod
    def for_core(
        cls, core_key: bytes, encryption_key: bytes, *, compat: bool = False, is_block_key: bool = False
    ) -> BlockEncryption:
        return cls(block_key(core_key, encryption_key, compat=compat, is_block_key=is_block_key))

    def encrypt(self, index: int, plaintext: bytes, fork: int) -> bytes:
        """The stored form of block `index`: blinded fork (8 bytes) || ciphertext."""
        index_le = _U64.pack(index)
        padding = xsalsa20_xor(_U64.pack(fork), index_le + _ZERO16, self.blinding_key)
        out = bytearray(PADDING + len(plaintext))
        out[:PADDING] = padding
        _xor_into(out, PADDING, bytes(plaintext), index_le + padding + _ZERO8, self.block_key)
        return bytes(out)

    def decrypt(self, index: int, stored: bytes) -> bytes:
        """The plaintext of a stored block; DecodingError if shorter than the padding."""
        if len(stored) < PADDING:
            raise DecodingError(f"encrypted block {index} is {len(stored)} bytes, shorter than its padding")
        padding = bytes(stored[:PADDING])
        out = bytearray(len(stored) - PADDING)
        _xor_into(out, 0, bytes(stored[PADDING:]), _U64.pack(index) + padding + _ZERO8, self.block_key)
        return bytes(out)

    def fork_of(self, index: int, stored: bytes) -> int:
        """The fork a stored block was encrypted under (unblinding its padding)."""
        return _U64.unpack(xsalsa20_xor(bytes(stored[:PADDING]), _U64.pack(index) + _ZERO16, self.blinding_key))[0]
