"""The bytes of a file being written through the mount, held in memory up to a bound (its own,
and a `MemoryBudget` all the buffers of a mount share), then in a temporary file.

A Hyperdrive file is one contiguous run of content blocks, so an edited file is written back
whole: the buffer holds the file's full new content (seeded from the drive when the file is
opened without O_TRUNC), takes random, sparse and truncating writes like a local file, and hands
its content out in pieces when the mount flushes it. A file streamed into the drive while it is
written lets the buffer drop what the drive already holds (`drop_before`), so memory, not a
temporary file, carries it however large it grows.
"""

from __future__ import annotations

import os
import tempfile
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

DEFAULT_MEMORY_LIMIT = 8 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024
# Writes shorter than this that follow one another go into one run, so a writer of small
# pieces does not leave thousands of them to join on every read.
MERGE_BELOW = 64 * 1024


class MemoryBudget:
    """The memory all the buffers sharing it may hold together: past `limit`, the buffer being
    written spills to its temporary file. A mount's buffers share one, so its memory stays
    bounded however many files are open for writing at once (each under its own limit, 300
    files of 3 MiB held 900 MB)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    @property
    def over(self) -> bool:
        return self.held > self.limit


class WriteBuffer:
    """A resizable byte store with pread/pwrite semantics that spills to disk past `memory_limit`.

    In memory, the content is a set of runs: each a write's bytes, at the offset it was written
    to, with zeros between them. A write that overlaps none keeps its own bytes object, wherever
    it lands, so a sequential writer's data is never copied here (the kernel's writes are not
    always aligned: one split write shifts all that follow). Writes over held bytes change them
    in place."""

    def __init__(
        self,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        spill_dir: str | None = None,
        merge_below: int = MERGE_BELOW,
        budget: MemoryBudget | None = None,
    ):
        self._memory_limit = memory_limit
        self._merge_below = merge_below
        self._spill_dir = spill_dir
        self._budget = budget
        self._starts: list[int] | None = []  # the runs' offsets, sorted
        self._runs: dict[int, bytes | bytearray] = {}
        self._bytes_held = 0
        self._fd: int | None = None
        self._size = 0
        self._base = 0

    @property
    def _held(self) -> int:
        """Bytes in `_runs`, counted in the shared budget too."""
        return self._bytes_held

    @_held.setter
    def _held(self, value: int) -> None:
        if self._budget is not None:
            self._budget.held += value - self._bytes_held
        self._bytes_held = value

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
        if self._starts is not None:
            self._write_runs(offset, data)
        else:
            _pwrite_full(self._fd, data, offset)
        self._size = max(self._size, offset + len(data))
        if self._starts is not None and (self._held > self._memory_limit or self._budget is not None and self._budget.over):
            self._spill()
        return len(data)

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset`; empty past the end."""
        size = max(0, min(size, self._size - offset))
        if size == 0:
            return b""
        self._check(offset)
        if self._starts is None:
            return _pread_full(self._fd, size, offset)
        starts, runs = self._starts, self._runs
        i = self._first_ending_after(offset)
        if i < len(starts) and starts[i] == offset:
            run = runs[offset]
            if len(run) == size and isinstance(run, bytes):
                return run  # a whole write as written: no copy
        parts: list[bytes | memoryview] = []
        stop = offset + size
        while offset < stop:
            if i < len(starts) and starts[i] <= offset:
                start = starts[i]
                run = runs[start]
                take = min(stop, start + len(run)) - offset
                parts.append(memoryview(run)[offset - start : offset - start + take])
                i += 1
            else:
                take = min(stop, starts[i] if i < len(starts) else stop) - offset
                parts.append(bytes(take))  # a hole
            offset += take
        return b"".join(parts)

    def read_run(self, offset: int, limit: int) -> bytes:
        """At most `limit` bytes from `offset` (empty past the end): the write held there, as it
        was written, when it starts at `offset` and is no longer; else as `read`."""
        if self._starts is not None and offset in self._runs and offset >= self._base:
            run = self._runs[offset]
            if len(run) <= limit and isinstance(run, bytes):
                return run
        return self.read(offset, limit)

    def truncate(self, size: int) -> None:
        """Cut or extend (with zeros) to `size` bytes."""
        self._check(size)
        if self._starts is not None:
            starts, runs = self._starts, self._runs
            cut = bisect_left(starts, size)
            for start in starts[cut:]:
                self._held -= len(runs.pop(start))
            del starts[cut:]
            if starts:
                start = starts[-1]
                run = runs[start]
                if start + len(run) > size:
                    self._held -= start + len(run) - size
                    if isinstance(run, bytearray):
                        del run[size - start :]
                    else:
                        runs[start] = run[: size - start]
        else:
            os.ftruncate(self._fd, size)
        self._size = size

    def drop_before(self, offset: int) -> None:
        """Give up the bytes before `offset` (the caller keeps them elsewhere): whole runs, and
        only while in memory. Reading, writing or cutting below `base` afterwards is an error."""
        if self._starts is None:
            return
        offset = min(offset, self._size)
        keep = self._first_ending_after(offset)
        for start in self._starts[:keep]:
            self._held -= len(self._runs.pop(start))
        del self._starts[:keep]
        # A run that goes on past `offset` stays whole, so its bytes stay readable.
        first = self._starts[0] if self._starts else offset
        self._base = max(self._base, min(offset, first))

    def chunks(self, chunk_size: int = CHUNK_SIZE, start: int = 0) -> Iterator[bytes]:
        """The content from `start` to the end, front to back, in pieces of at most `chunk_size` bytes."""
        for offset in range(start, self._size, chunk_size):
            yield self.read(offset, chunk_size)

    def close(self) -> None:
        """Free the memory and delete the temporary file (its name is already unlinked)."""
        self._starts, self._runs, self._held = None, {}, 0
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _check(self, offset: int) -> None:
        if offset < self._base:
            raise ValueError(f"offset {offset} is below the buffer's base {self._base}")

    def _first_ending_after(self, offset: int) -> int:
        """The index of the first run that ends past `offset`."""
        starts = self._starts
        i = bisect_right(starts, offset) - 1
        if i >= 0 and starts[i] + len(self._runs[starts[i]]) > offset:
            return i
        return i + 1

    def _write_runs(self, offset: int, data: bytes | memoryview) -> None:
        starts, runs = self._starts, self._runs
        end = offset + len(data)
        first = self._first_ending_after(offset)
        last = bisect_left(starts, end, lo=first)  # runs[first:last] overlap the write
        if first == last:
            before = starts[first - 1] if first else -1
            run = runs.get(before, b"")
            if before + len(run) == offset and len(run) < self._merge_below > len(data):
                if not isinstance(run, bytearray):
                    run = runs[before] = bytearray(run)
                run += data  # a small write right after a small run: one run
            else:
                starts.insert(first, offset)
                runs[offset] = data if isinstance(data, bytes) else bytes(data)
            self._held += len(data)
            return
        start = starts[first]
        run = runs[start]
        if last - first == 1 and start <= offset and end <= start + len(run):
            if start == offset and len(run) == len(data) and isinstance(data, bytes):
                runs[start] = data  # the same span written again
            else:
                if not isinstance(run, bytearray):
                    run = runs[start] = bytearray(run)
                memoryview(run)[offset - start : end - start] = data
            return
        # The write joins the runs it touches into one.
        self._held -= sum(len(runs[s]) for s in starts[first:last])
        tail_start = starts[last - 1]
        tail = runs[tail_start][end - tail_start :]
        if start >= offset and not tail and isinstance(data, bytes):
            joined: bytes | bytearray = data
        else:
            joined = run if isinstance(run, bytearray) and start < offset else bytearray(run[: max(0, offset - start)])
            del joined[max(0, offset - start) :]
            joined += data
            joined += tail
        for s in starts[first:last]:
            del runs[s]
        del starts[first:last]
        start = min(start, offset)
        starts.insert(first, start)
        runs[start] = joined
        self._held += len(joined)

    def _spill(self) -> None:
        fd, path = tempfile.mkstemp(prefix="hyperfs-write-", dir=self._spill_dir)
        # The name goes at once: nothing outlives the process, even after a SIGKILL.
        os.unlink(path)
        for start in self._starts:  # what was dropped stays a hole
            _pwrite_full(fd, self._runs[start], start)
        os.ftruncate(fd, self._size)
        self._fd, self._starts, self._runs, self._held = fd, None, {}, 0

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
