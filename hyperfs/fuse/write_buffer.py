"""The bytes of a file being written through the mount, held in memory up to a bound, then in a
temporary file.

A Hyperdrive file is one contiguous run of content blocks, so an edited file is written back
whole: the buffer holds the file's full new content (seeded from the drive when the file is
opened without O_TRUNC), takes random, sparse and truncating writes like a local file, and hands
its content out in chunks when the mount flushes it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

DEFAULT_MEMORY_LIMIT = 4 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024


class WriteBuffer:
    """A resizable byte store with pread/pwrite semantics that spills to disk past `memory_limit`."""

    def __init__(self, memory_limit: int = DEFAULT_MEMORY_LIMIT, spill_dir: str | None = None):
        self._memory_limit = memory_limit
        self._spill_dir = spill_dir
        self._mem: bytearray | None = bytearray()
        self._fd: int | None = None
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def spilled(self) -> bool:
        """True once the content lives in a temporary file."""
        return self._fd is not None

    def write(self, offset: int, data: bytes | memoryview) -> int:
        """Write `data` at `offset`; a gap past the end reads back as zeros (a sparse write)."""
        if not data:  # like pwrite: an empty write never extends the file
            return 0
        end = offset + len(data)
        if self._mem is not None and end > self._memory_limit:
            self._spill()
        if self._mem is not None:
            if offset > len(self._mem):
                self._mem.extend(bytes(offset - len(self._mem)))
            self._mem[offset:end] = data
        else:
            _pwrite_full(self._fd, data, offset)
        self._size = max(self._size, end)
        return len(data)

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset`; empty past the end."""
        size = max(0, min(size, self._size - offset))
        if size == 0:
            return b""
        if self._mem is not None:
            return bytes(self._mem[offset : offset + size])
        return _pread_full(self._fd, size, offset)

    def truncate(self, size: int) -> None:
        """Cut or extend (with zeros) to `size` bytes."""
        if self._mem is not None and size > self._memory_limit:
            self._spill()
        if self._mem is not None:
            if size < len(self._mem):
                del self._mem[size:]
            else:
                self._mem.extend(bytes(size - len(self._mem)))
        else:
            os.ftruncate(self._fd, size)
        self._size = size

    def chunks(self, chunk_size: int = CHUNK_SIZE, start: int = 0) -> Iterator[bytes]:
        """The content from `start` to the end, front to back, in pieces of at most `chunk_size` bytes."""
        for offset in range(start, self._size, chunk_size):
            yield self.read(offset, chunk_size)

    def close(self) -> None:
        """Free the memory and delete the temporary file (its name is already unlinked)."""
        self._mem = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _spill(self) -> None:
        fd, path = tempfile.mkstemp(prefix="hyperfs-write-", dir=self._spill_dir)
        # The name goes at once: nothing outlives the process, even after a SIGKILL.
        os.unlink(path)
        _pwrite_full(fd, self._mem, 0)
        os.ftruncate(fd, self._size)
        self._fd, self._mem = fd, None

    def __enter__(self) -> WriteBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pwrite_full(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _pread_full(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:  # a hole at the end is zeros
            parts.append(bytes(size - got))
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
