"""compact-encoding: the byte encodings Hypercore uses on disk and on the wire.

`Encoder` appends to a growable buffer; `Decoder` reads fields in order from a slice and raises
`DecodingError` on anything truncated or out of range (never IndexError, never a loop), so hostile
bytes from a peer or a damaged store give a clear error. Integers decode up to 2^53-1, as the
JavaScript decoders do. See `shared/spec/core-crypto.md` §2.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from hyperfs.errors import DecodingError, InvalidArgumentError

T = TypeVar("T")

MAX_SAFE_INTEGER = (1 << 53) - 1
MAX_UINT64 = (1 << 64) - 1
MAX_ARRAY = 0x100000

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class TreeNode(NamedTuple):
    """A Merkle tree node: flat-tree `index`, byte `size` of the blocks under it, 32-byte `hash`."""

    index: int
    size: int
    hash: bytes


def uint_bytes(n: int) -> bytes:
    """The varint `uint` encoding of `n`."""
    if n <= 0xFC:
        if n < 0:
            raise InvalidArgumentError(f"uint must not be negative: {n}")
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfd" + _U16.pack(n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + _U32.pack(n)
    if n > MAX_UINT64:
        raise InvalidArgumentError(f"uint does not fit in 64 bits: {n}")
    return b"\xff" + _U64.pack(n)


def u64le(n: int) -> bytes:
    """8 bytes little endian (the fixed-width integers inside hashes and signables)."""
    return _U64.pack(n)


class Encoder:
    """Appends compact-encoded fields; `bytes(enc)` or `enc.getvalue()` gives the result."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self.buf)

    __bytes__ = getvalue

    def uint(self, n: int) -> Encoder:
        self.buf += uint_bytes(n)
        return self

    def uint64(self, n: int) -> Encoder:
        self.buf += _U64.pack(n)
        return self

    def bool(self, value: bool) -> Encoder:
        self.buf.append(1 if value else 0)
        return self

    def fixed(self, data: bytes, size: int) -> Encoder:
        if len(data) != size:
            raise InvalidArgumentError(f"expected {size} bytes, got {len(data)}")
        self.buf += data
        return self

    def fixed32(self, data: bytes) -> Encoder:
        return self.fixed(data, 32)

    def fixed64(self, data: bytes) -> Encoder:
        return self.fixed(data, 64)

    def buffer(self, data: bytes | bytearray | memoryview) -> Encoder:
        self.buf += uint_bytes(len(data))
        self.buf += data
        return self

    def optional_buffer(self, data: bytes | None) -> Encoder:
        """Like `buffer`; None (and the empty buffer) encode as a single 0."""
        return self.buffer(data or b"")

    def string(self, text: str) -> Encoder:
        return self.buffer(text.encode("utf-8"))

    def raw(self, data: bytes) -> Encoder:
        """The bytes themselves, no length (a trailing field that runs to the end)."""
        self.buf += data
        return self

    def array(self, items: list[T], encode_item: Callable[[Encoder, T], object]) -> Encoder:
        self.uint(len(items))
        for item in items:
            encode_item(self, item)
        return self

    def uint_array(self, items: list[int]) -> Encoder:
        self.uint(len(items))
        for n in items:
            self.buf += uint_bytes(n)
        return self

    def uint32_array(self, words: list[int]) -> Encoder:
        self.uint(len(words))
        self.buf += struct.pack(f"<{len(words)}I", *words)
        return self

    def tree_node(self, node: TreeNode) -> Encoder:
        self.buf += uint_bytes(node.index)
        self.buf += uint_bytes(node.size)
        return self.fixed32(node.hash)


class Decoder:
    """Reads compact-encoded fields in order from `data[start:end]`."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None):
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def done(self) -> bool:
        """True when every byte has been read (optional trailing fields are absent)."""
        return self.pos >= self.end

    def expect_end(self) -> None:
        if self.pos != self.end:
            raise DecodingError(f"{self.end - self.pos} unexpected trailing bytes")

    def _take(self, size: int) -> bytes:
        start = self.pos
        stop = start + size
        if stop > self.end:
            raise DecodingError(f"truncated: needed {size} bytes, {self.end - start} left")
        self.pos = stop
        return bytes(self.data[start:stop])

    def uint(self) -> int:
        if self.pos >= self.end:
            raise DecodingError("truncated: no byte left for a uint")
        first = self.data[self.pos]
        self.pos += 1
        if first <= 0xFC:
            return first
        if first == 0xFD:
            return _U16.unpack(self._take(2))[0]
        if first == 0xFE:
            return _U32.unpack(self._take(4))[0]
        n = _U64.unpack(self._take(8))[0]
        if n > MAX_SAFE_INTEGER:
            raise DecodingError(f"uint {n} is above 2^53-1")
        return n

    def uint64(self) -> int:
        n = _U64.unpack(self._take(8))[0]
        if n > MAX_SAFE_INTEGER:
            raise DecodingError(f"uint64 {n} is above 2^53-1")
        return n

    def bool(self) -> bool:
        value = self._take(1)[0]
        if value > 1:
            raise DecodingError(f"bool byte must be 0 or 1, got {value}")
        return value == 1

    def fixed(self, size: int) -> bytes:
        return self._take(size)

    def fixed32(self) -> bytes:
        return self._take(32)

    def fixed64(self) -> bytes:
        return self._take(64)

    def buffer(self) -> bytes:
        return self._take(self.uint())

    def optional_buffer(self) -> bytes | None:
        data = self.buffer()
        return data or None

    def string(self) -> str:
        data = self.buffer()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DecodingError(f"string is not valid UTF-8: {err}") from None

    def raw(self) -> bytes:
        """Everything left."""
        return self._take(self.end - self.pos)

    def _count(self) -> int:
        count = self.uint()
        if count > MAX_ARRAY:
            raise DecodingError(f"array of {count} items is above the limit of {MAX_ARRAY}")
        return count

    def array(self, decode_item: Callable[[Decoder], T]) -> list[T]:
        return [decode_item(self) for _ in range(self._count())]

    def uint_array(self) -> list[int]:
        return [self.uint() for _ in range(self._count())]

    def uint32_array(self) -> list[int]:
        count = self._count()
        return list(struct.unpack(f"<{count}I", self._take(4 * count)))

    def tree_node(self) -> TreeNode:
        return TreeNode(self.uint(), self.uint(), self.fixed32())


def encode_tree_node(node: TreeNode) -> bytes:
    return Encoder().tree_node(node).getvalue()


def decode_tree_node(data: bytes) -> TreeNode:
    dec = Decoder(data)
    node = dec.tree_node()
    dec.expect_end()
    return node
