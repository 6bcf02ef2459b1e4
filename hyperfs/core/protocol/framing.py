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
    are needed. Bodies are read-only memoryviews into the received chunks (no copy when a frame
    lies inside one chunk; chunks are joined once, when a frame spanning them is complete). A
    length prefix of 0 or above `max_size` raises ProtocolError as soon as its three bytes are
    in, so a hostile peer cannot make us hold more than `max_size` bytes for one frame.
    """

    __slots__ = ("max_size", "_data", "_pos", "_more", "_more_size")

    def __init__(self, max_size: int = MAX_FRAME_SIZE) -> None:
        if not 0 < max_size <= MAX_FRAME_SIZE:
            raise ValueError(f"max_size must be in 1..{MAX_FRAME_SIZE}")
        self.max_size = max_size
        self._data = b""  # the chunk being read, from _pos on
        self._pos = 0
        self._more: list[bytes] = []  # chunks after it, joined only when a frame needs them
        self._more_size = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._data) - self._pos + self._more_size

    def feed(self, chunk: bytes) -> None:
        """Append bytes read from the stream (kept by reference: pass immutable bytes)."""
        if self._pos == len(self._data) and not self._more:
            self._data, self._pos = chunk, 0
        else:
            self._more.append(chunk)
            self._more_size += len(chunk)

    def _join(self) -> None:
        self._data = self._data[self._pos :] + b"".join(self._more)
        self._pos = 0
        self._more.clear()
        self._more_size = 0

    def next_frame(self) -> memoryview | None:
        """The next complete frame body, or None if it has not fully arrived yet."""
        if len(self._data) - self._pos < HEADER_SIZE:
            if self.buffered < HEADER_SIZE:
                return None
            self._join()
        data, pos = self._data, self._pos
        size = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        if size == 0:
            raise ProtocolError("peer sent an empty frame")
        if size > self.max_size:
            raise ProtocolError(f"peer sent a frame of {size} bytes, above the limit of {self.max_size}")
        end = pos + HEADER_SIZE + size
        if end > len(data):
            if self.buffered < HEADER_SIZE + size:
                return None
            self._join()
            data, pos, end = self._data, 0, HEADER_SIZE + size
        self._pos = end
        return memoryview(data)[pos + HEADER_SIZE : end]
