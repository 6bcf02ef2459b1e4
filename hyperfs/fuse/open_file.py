"""What the mount keeps for a file that is open: the handles on it and, once it is written, its
new content, shared by every handle as on a local file system."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

from hyperfs.fuse.write_buffer import WriteBuffer


@dataclass
class OpenFile:
    """One inode with open handles. `buffer` is its current content while it differs from the
    drive (or after it was unlinked while open), whole unless a stream holds its start;
    `generation` counts changes so a flush that raced with a write knows it must run again."""

    ino: int
    handles: int = 0
    writers: int = 0  # those of `handles` open for writing
    buffer: WriteBuffer | None = None
    generation: int = 0
    committed: int = 0
    unlinked: bool = False
    fresh: bool = False  # created here, no Node in the drive yet
    stat: Any = None  # the drive's Stat from when it was unlinked
    pending: dict[str, int] = field(default_factory=dict)  # mode/uid/gid/mtime for the next Node
    mtime_ns: int = 0  # when the buffer last changed
    lock: trio.Lock = field(default_factory=trio.Lock)
    # Writes enter the buffer one at a time, in order; a commit or a stream's end keeps them out.
    admit: trio.Lock = field(default_factory=trio.Lock)
    # Streaming: a file written from empty goes to the drive while it grows. The first `fed`
    # bytes are in `stream` already, and the buffer has dropped those below its `base`. Any
    # change below `fed` ends it (the buffer takes back what it dropped and is written whole,
    # as for any edited file).
    streamable: bool = False
    stream: Any = None  # the drive's FileWriter
    stream_path: str = ""
    fed: int = 0
    feeding: bool = False  # a task is handing chunks to `stream`
    lost: Exception | None = None  # the stream failed after the buffer dropped what it took
    # A size change (O_TRUNC, truncate) came while another handle could write. The kernel may
    # then still send bytes that were in its cache before the change and that it dropped with
    # it: its own size says where the file ends (see `DriveOperations._settle_size`).
    size_unsure: bool = False
    resized_at: int = -1  # the generation the last size change made
    # The drive's Stat from the last commit while the buffer (whole, nothing dropped) still
    # starts with its content: the next commit appends only what came after it. Any change
    # below its size clears it (`DriveOperations._changed_below`).
    intact: Any = None

    @property
    def dirty(self) -> bool:
        return self.generation != self.committed

    def changed(self) -> None:
        self.generation += 1

    def stop_stream(self) -> None:
        """No more streaming for this file (what the stream appended stays unused)."""
        self.streamable = False
        if self.stream is not None:
            self.stream.abort()
            self.stream = None
        self.fed = 0

    def close(self) -> None:
        self.stop_stream()
        if self.buffer is not None:
            self.buffer.close()
            self.buffer = None


@dataclass
class Handle:
    """One open() of a file: the shared OpenFile plus this handle's own flags."""

    file: OpenFile
    writable: bool
    append: bool
