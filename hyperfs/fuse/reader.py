"""Sequential reads of a drive file through one open stream.

The kernel reads a file front to back in `max_read` pieces; opening a new drive stream for each
would seek the content core every time. A `ContentReader` keeps the stream it opened and serves
the next piece from where the last one ended, restarting only when the kernel jumps.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import trio


class ContentReader:
    """Reads of one drive path through a stream kept open between calls."""

    def __init__(self, drive: Any):
        self._drive = drive
        self._path = ""
        self._stream: AsyncGenerator[bytes, None] | None = None
        self._pos = 0  # file offset of `_pending[0]`
        self._pending = memoryview(b"")
        self._lock = trio.Lock()  # FIFO: queued sequential pieces run in order
        self._ahead = 0  # where the last queued piece ends

    async def read(self, path: str, offset: int, size: int) -> bytes | memoryview:
        """Up to `size` bytes of file `path` (where it is now: it may have been renamed) at
        `offset`, fewer only at the end of the file."""
        if self._lock.locked() and (offset != self._ahead or path != self._path):
            # The kernel reads ahead in parallel: the piece right after the queued ones waits its
            # turn on the cursor; any other gets its own short stream instead of throwing it off.
            return await self._read_once(path, offset, size)
        self._ahead = offset + size
        async with self._lock:
            return await self._read_cursor(path, offset, size)

    async def _read_once(self, path: str, offset: int, size: int) -> bytes:
        stream = self._drive.open_read(path, start=offset, end=offset + size)
        try:
            return b"".join([bytes(chunk) async for chunk in stream])
        finally:
            await stream.aclose()

    async def _read_cursor(self, path: str, offset: int, size: int) -> bytes | memoryview:
        if self._stream is None or offset != self._pos or path != self._path:
            await self.close()
            self._stream = self._drive.open_read(path, start=offset)
            self._path, self._pos = path, offset
        parts: list[memoryview] = []
        want = size
        while want > 0:
            if not self._pending:
                try:
                    self._pending = memoryview(await anext(self._stream))
                except StopAsyncIteration:
                    break
            piece = self._pending[:want]
            self._pending = self._pending[len(piece) :]
            parts.append(piece)
            want -= len(piece)
        self._pos += size - want
        if not parts:
            return b""
        # One whole piece goes out as it is: the block is copied only into the kernel.
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def close(self) -> None:
        """End the open stream, if any."""
        stream, self._stream = self._stream, None
        self._pending = memoryview(b"")
        if stream is not None:
            await stream.aclose()
