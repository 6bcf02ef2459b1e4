"""uint24 length-prefixed frames: the unit of @hyperswarm/secret-stream on a byte stream.

Every frame on the wire, Noise handshake messages included, is `u24le(n) || body[n]` with
`1 <= n <= 2^24 - 1` (wire.md §2.1). TCP delivers arbitrary chunks, so `FrameDecoder` buffers
bytes and hands out whole bodies.
"""

from __future__ import annotations

from hyperfs.errors import ProtocolError

HEADER_SIZE = 3
MAX_FRAME_SIZE = (1 << 24) - 1  # MAX_ATOMIC_WRITE in secret-stream


def frame_header(size: int) -> bytes:
    """The 3-byte little-endian length prefix of a frame body of `size` bytes."""
    if not 0 < size <= MAX_FRAME_SIZE:
        raise ProtocolError(f"frame of {size} bytes is outside 1..{MAX_FRAME_SIZE}")
    return size.to_bytes(HEADER_SIZE, "little")


def encode_frame(body: bytes) -> bytes:
    """`u24le(len(body)) || body`."""
    return frame_header(len(body)) + body


class FrameDecoder:
    """Reassembles frame bodies from chunks of a byte stream.

    `feed(chunk)` adds bytes; `next_frame()` returns the next whole body or None when more bytes
    are needed. A length prefix of 0 or above `max_size` raises ProtocolError as soon as its three
    bytes are in, before any body is buffered, so a hostile peer cannot make us hold more than
    `max_size` bytes.
    """

    __slots__ = ("max_size", "_buf", "_pos")

    def __init__(self, max_size: int = MAX_FRAME_SIZE) -> None:
        if not 0 < max_size <= MAX_FRAME_SIZE:
            raise ValueError(f"max_size must be in 1..{MAX_FRAME_SIZE}")
        self.max_size = max_size
        self._buf = bytearray()
        self._pos = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the stream."""
        if self._pos == len(self._buf):
            # Everything before was consumed: restart the buffer instead of growing it.
            self._buf = bytearray(chunk)
            self._pos = 0
        else:
            if self._pos > (1 << 20) and self._pos * 2 > len(self._buf):
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += chunk

    def next_frame(self) -> bytes | None:
        """The next complete frame body, or None if it has not fully arrived yet."""
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < HEADER_SIZE:
            return None
        size = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        if size == 0:
            raise ProtocolError("peer sent an empty frame")
        if size > self.max_size:
            raise ProtocolError(f"peer sent a frame of {size} bytes, above the limit of {self.max_size}")
        if available < HEADER_SIZE + size:
            return None
        start = pos + HEADER_SIZE
        self._pos = start + size
        return bytes(buf[start : self._pos])
