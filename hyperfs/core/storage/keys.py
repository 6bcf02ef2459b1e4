"""RocksDB key layout of hypercore-storage 1.9.6 (`lib/keys.js`), built with index-encoder.

Keys sort in RocksDB's bytewise order exactly as in the JavaScript store, so ranges (a core's
blocks, a data pointer's whole state, `store.clear`) are contiguous key ranges. index-encoder's
UINT is big-endian with a length prefix byte (0xfc/0xfd/0xfe; 0xff stands for Infinity, the
open end of a range); its STRING is 0x00, the bytes with every 0x00 followed by 0x02, then 0x00 0x01.
Discovery keys and namespaces are compact-encoding fixed32 (raw 32 bytes).
"""

from __future__ import annotations

import functools
import struct

from hyperfs.errors import InvalidArgumentError, InvalidKeyError

TL_HEAD = 0
TL_CORE_BY_DKEY = 1
TL_CORE_BY_ALIAS = 2
TL_CORE = 3
TL_DATA = 4
TL_END = TL_DATA + 1

CORE_AUTH = 0
CORE_SESSIONS = 1

DATA_HEAD = 0
DATA_DEPENDENCY = 1
DATA_HINTS = 2
DATA_BLOCK = 3
DATA_TREE = 4
DATA_BITFIELD = 5
DATA_USER_DATA = 6
DATA_LOCAL = 7

MAX_LOCAL_KEY = 2048

INFINITY = -1
"""Pass as an index to get the open end of a range (index-encoder encodes Infinity as 0xff)."""

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_MAX_SAFE = (1 << 53) - 1


_ONE_BYTE = [bytes((n,)) for n in range(0xFC)]


def encode_uint(n: int) -> bytes:
    """index-encoder UINT: order-preserving; `INFINITY` (-1) sorts after every number."""
    if n <= 0xFB:
        if n >= 0:
            return _ONE_BYTE[n]
        if n == INFINITY:
            return b"\xff"
        raise InvalidArgumentError(f"key index must not be negative: {n}")
    if n <= 0xFFFF:
        return b"\xfc" + _U16.pack(n)
    if n <= 0xFFFFFFFF:
        return b"\xfd" + _U32.pack(n)
    if n > _MAX_SAFE:
        raise InvalidArgumentError(f"key index {n} is above 2^53-1")
    return b"\xfe" + _U32.pack(n >> 32) + _U32.pack(n & 0xFFFFFFFF)


def decode_uint(key: bytes, pos: int) -> tuple[int, int]:
    """Decode an index-encoder UINT at `pos`: (value, next position). Infinity gives INFINITY."""
    if pos >= len(key):
        raise InvalidKeyError("storage key ends where a number was expected")
    first = key[pos]
    if first <= 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 4, 0xFE: 8}.get(first)
    if size is None:
        return INFINITY, pos + 1
    end = pos + 1 + size
    if end > len(key):
        raise InvalidKeyError("storage key is truncated inside a number")
    return int.from_bytes(key[pos + 1 : end], "big"), end


def encode_string(text: str) -> bytes:
    """index-encoder STRING: UTF-8 with 0x00 escaped as 0x00 0x02, framed by 0x00 … 0x00 0x01."""
    return b"\x00" + text.encode("utf-8").replace(b"\x00", b"\x00\x02") + b"\x00\x01"


def decode_string(key: bytes, pos: int) -> tuple[str, int]:
    """Decode an index-encoder STRING at `pos`: (text, next position)."""
    if pos >= len(key) or key[pos] != 0:
        raise InvalidKeyError("storage key lacks the start of a string")
    parts = []
    start = pos + 1
    while True:
        zero = key.find(b"\x00", start)
        if zero == -1 or zero + 1 >= len(key):
            raise InvalidKeyError("storage key string has no terminator")
        marker = key[zero + 1]
        if marker == 0x01:
            parts.append(key[start:zero])
            break
        if marker != 0x02:
            raise InvalidKeyError(f"storage key string has an unknown escape 0x{marker:02x}")
        parts.append(key[start : zero + 1])
        start = zero + 2
    try:
        return b"".join(parts).decode("utf-8"), zero + 2
    except UnicodeDecodeError as err:
        raise InvalidKeyError(f"storage key string is not UTF-8: {err}") from None


def fixed32(value: bytes, what: str) -> bytes:
    """Check a 32-byte key (discovery key, namespace) and return it as bytes."""
    if not isinstance(value, (bytes, bytearray, memoryview)) or len(value) != 32:
        size = len(value) if isinstance(value, (bytes, bytearray, memoryview)) else type(value).__name__
        raise InvalidKeyError(f"{what} must be 32 bytes, got {size}")
    return bytes(value)


# --- store level -----------------------------------------------------------------------------


def store_head() -> bytes:
    return encode_uint(TL_HEAD)


def store_clear_range() -> tuple[bytes, bytes]:
    """Every key the store holds: [TL_HEAD, TL_END)."""
    return encode_uint(TL_HEAD), encode_uint(TL_END)


def store_core(discovery_key: bytes) -> bytes:
    return encode_uint(TL_CORE_BY_DKEY) + fixed32(discovery_key, "discovery key")


def store_core_range() -> tuple[bytes, bytes]:
    return encode_uint(TL_CORE_BY_DKEY), encode_uint(TL_CORE_BY_DKEY + 1)


def store_core_by_alias(namespace: bytes, name: str) -> bytes:
    return encode_uint(TL_CORE_BY_ALIAS) + fixed32(namespace, "alias namespace") + encode_string(name)


def store_core_by_alias_range(namespace: bytes | None = None) -> tuple[bytes, bytes]:
    """All aliases, or those of one namespace."""
    if namespace is None:
        return encode_uint(TL_CORE_BY_ALIAS), encode_uint(TL_CORE_BY_ALIAS + 1)
    prefix = encode_uint(TL_CORE_BY_ALIAS) + fixed32(namespace, "alias namespace")
    return prefix, prefix + b"\xff"


def decode_store_discovery_key(key: bytes) -> bytes:
    _, pos = decode_uint(key, 0)
    if len(key) != pos + 32:
        raise InvalidKeyError(f"core key must hold a 32-byte discovery key, has {len(key) - pos}")
    return key[pos:]


def decode_store_alias(key: bytes) -> tuple[bytes, str]:
    """(namespace, name) of an alias key."""
    _, pos = decode_uint(key, 0)
    if len(key) < pos + 32:
        raise InvalidKeyError("alias key is shorter than its 32-byte namespace")
    namespace = key[pos : pos + 32]
    name, _ = decode_string(key, pos + 32)
    return namespace, name


# --- per core (auth, sessions) and per data pointer --------------------------------------------


@functools.lru_cache(maxsize=1024)
def core_prefix(core_pointer: int) -> bytes:
    return encode_uint(TL_CORE) + encode_uint(core_pointer)


@functools.lru_cache(maxsize=1024)  # every key of a core starts with it
def data_prefix(data_pointer: int) -> bytes:
    return encode_uint(TL_DATA) + encode_uint(data_pointer)


def core_auth(core_pointer: int) -> bytes:
    return core_prefix(core_pointer) + encode_uint(CORE_AUTH)


def core_sessions(core_pointer: int) -> bytes:
    return core_prefix(core_pointer) + encode_uint(CORE_SESSIONS)


def data_head(data_pointer: int) -> bytes:
    return data_prefix(data_pointer) + encode_uint(DATA_HEAD)


def data_dependency(data_pointer: int) -> bytes:
    return data_prefix(data_pointer) + encode_uint(DATA_DEPENDENCY)


def data_hints(data_pointer: int) -> bytes:
    return data_prefix(data_pointer) + encode_uint(DATA_HINTS)


def data_block(data_pointer: int, index: int) -> bytes:
    return data_prefix(data_pointer) + encode_uint(DATA_BLOCK) + encode_uint(index)


def data_tree(data_pointer: int, index: int) -> bytes:
    return data_prefix(data_pointer) + encode_uint(DATA_TREE) + encode_uint(index)


def data_bitfield(data_pointer: int, index: int, type_: int = 0) -> bytes:
    return data_prefix(data_pointer) + encode_uint(DATA_BITFIELD) + encode_uint(index) + encode_uint(type_)


def data_user_data(data_pointer: int, key: str) -> bytes:
    return data_prefix(data_pointer) + encode_uint(DATA_USER_DATA) + encode_string(key)


def data_user_data_end(data_pointer: int) -> bytes:
    return data_prefix(data_pointer) + encode_uint(DATA_USER_DATA + 1)


def data_local(data_pointer: int, key: bytes) -> bytes:
    if len(key) > MAX_LOCAL_KEY:
        raise InvalidArgumentError(f"local keys are at most {MAX_LOCAL_KEY} bytes, got {len(key)}")
    return data_prefix(data_pointer) + encode_uint(DATA_LOCAL) + bytes(key)


def data_local_end(data_pointer: int) -> bytes:
    return data_prefix(data_pointer) + encode_uint(DATA_LOCAL + 1)


def _skip_data_prefix(key: bytes) -> int:
    pos = 0
    for _ in range(3):  # namespace, data pointer, type
        _, pos = decode_uint(key, pos)
    return pos


def decode_index(key: bytes) -> int:
    """The block or tree-node index of a block/tree key."""
    index, pos = decode_uint(key, _skip_data_prefix(key))
    if pos != len(key):
        raise InvalidKeyError("block/tree key has trailing bytes")
    return index


def decode_bitfield_index_and_type(key: bytes) -> tuple[int, int]:
    index, pos = decode_uint(key, _skip_data_prefix(key))
    type_, _ = decode_uint(key, pos)
    return index, type_


def decode_user_data_key(key: bytes) -> str:
    return decode_string(key, _skip_data_prefix(key))[0]


def decode_local_key(key: bytes) -> bytes:
    return key[_skip_data_prefix(key) :]
