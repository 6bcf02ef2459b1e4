"""The bytes of a file being written through the mount, held in memory up to a bound, then in a
temporary file.

A Hyperdrive file is one contiguous run of content blocks, so an edited file is written back
whole: the buffer holds the file's full new content (seeded from the drive when the file is
opened without O_TRUNC), takes random, sparse and truncating writes like a local file, and hands
its content out in chunks when the mount flushes it. A file streamed into the drive while it is
written lets the buffer drop what the drive already holds (`drop_before`), so memory, not a
temporary file, carries it however large it grows.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

DEFAULT_MEMORY_LIMIT = 8 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024
PAGE_SIZE = CHUNK_SIZE  # the kernel's largest write: a sequential one fills one page whole


class WriteBuffer:
    """A resizable byte store with pread/pwrite semantics that spills to disk past `memory_limit`.

    In memory, the content is a map of pages of `page_size` bytes; a page holds the bytes from its
    start to the furthest written (past that, zeros), and a page a write fills whole keeps that
    write's own bytes object, so a sequential writer's data is never copied here."""

    def __init__(
        self, memory_limit: int = DEFAULT_MEMORY_LIMIT, spill_dir: str | None = None, page_size: int = PAGE_SIZE
    ):
        self._memory_limit = memory_limit
        self._page_size = page_size
        self._spill_dir = spill_dir
        self._pages: dict[int, bytes | bytearray] | None = {}
        self._held = 0  # bytes in `_pages`
        self._fd: int | None = None
        self._size = 0
        self._base = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def base(self) -> int:
        """Where the content still held starts: `drop_before` gave up the bytes before it."""
        return self._base

    @property
    def spilled(self) -> bool:
        """True once the content lives in a temporary file."""
        return self._fd is not None

    def write(self, offset: int, data: bytes | memoryview) -> int:
        """Write `data` at `offset`; a gap past the end reads back as zeros (a sparse write)."""
        self._check(offset)
        if not data:  # like pwrite: an empty write never extends the file
            return 0
        if self._pages is not None:
            self._write_pages(offset, data)
        else:
            _pwrite_full(self._fd, data, offset)
        self._size = max(self._size, offset + len(data))
        if self._pages is not None and self._held > self._memory_limit:
            self._spill()
        return len(data)

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset`; empty past the end."""
        size = max(0, min(size, self._size - offset))
        if size == 0:
            return b""
        self._check(offset)
        if self._pages is None:
            return _pread_full(self._fd, size, offset)
        index, start = divmod(offset, self._page_size)
        page = self._pages.get(index, b"")
        if start == 0 and len(page) == size and isinstance(page, bytes):
            return page  # a whole page as written: no copy
        parts = []
        while size:
            index, start = divmod(offset, self._page_size)
            take = min(size, self._page_size - start)
            piece = self._pages.get(index, b"")[start : start + take]
            parts.append(piece if len(piece) == take else bytes(piece) + bytes(take - len(piece)))
            offset, size = offset + take, size - take
        return b"".join(parts)

    def truncate(self, size: int) -> None:
        """Cut or extend (with zeros) to `size` bytes."""
        self._check(size)
        if self._pages is not None:
            for index in [i for i in self._pages if i * self._page_size >= size]:
                self._held -= len(self._pages.pop(index))
            index, start = divmod(size, self._page_size)
            page = self._pages.get(index)
            if page is not None and len(page) > start:
                self._pages[index] = page[:start]
                self._held -= len(page) - start
        else:
            os.ftruncate(self._fd, size)
        self._size = size

    def drop_before(self, offset: int) -> None:
        """Give up the bytes before `offset` (the caller keeps them elsewhere): whole pages, and
        only while in memory. Reading, writing or cutting below `base` afterwards is an error."""
        if self._pages is None:
            return
        first = min(offset, self._size) // self._page_size
        for index in [i for i in self._pages if i < first]:
            self._held -= len(self._pages.pop(index))
        self._base = max(self._base, first * self._page_size)

    def chunks(self, chunk_size: int = CHUNK_SIZE, start: int = 0) -> Iterator[bytes]:
        """The content from `start` to the end, front to back, in pieces of at most `chunk_size` bytes."""
        for offset in range(start, self._size, chunk_size):
            yield self.read(offset, chunk_size)

    def close(self) -> None:
        """Free the memory and delete the temporary file (its name is already unlinked)."""
        self._pages = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _check(self, offset: int) -> None:
        if offset < self._base:
            raise ValueError(f"offset {offset} is below the buffer's base {self._base}")

    def _write_pages(self, offset: int, data: bytes | memoryview) -> None:
        pages = self._pages
        view = memoryview(data).cast("B")
        while view:
            index, start = divmod(offset, self._page_size)
            take = min(len(view), self._page_size - start)
            page = pages.get(index, b"")
            held = len(page)
            if start == 0 and take == len(data) >= held and isinstance(data, bytes):
                pages[index] = data  # the write covers all the page held: keep its bytes
            else:
                if not isinstance(page, bytearray):
                    page = pages[index] = bytearray(page)
                if len(page) < start:
                    page.extend(bytes(start - len(page)))
                page[start : start + take] = view[:take]
            self._held += len(pages[index]) - held
            offset, view = offset + take, view[take:]

    def _spill(self) -> None:
        fd, path = tempfile.mkstemp(prefix="hyperfs-write-", dir=self._spill_dir)
        # The name goes at once: nothing outlives the process, even after a SIGKILL.
        os.unlink(path)
        for index, page in self._pages.items():  # what was dropped stays a hole
            _pwrite_full(fd, page, index * self._page_size)
        os.ftruncate(fd, self._size)
        self._fd, self._pages, self._held = fd, None, 0

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
