"""Reads of a drive file through one open handle.

The kernel reads a file front to back in `max_read` pieces, the next asked for while the last
is being fetched. One drive `FileReader` per handle serves them all: it goes on from where the
last piece ended instead of seeking the content core each time, and fetches the next piece
while the loop hands the last one to the kernel. It is opened afresh when the file's content
may have changed.
"""

from __future__ import annotations

from typing import Any


class ContentReader:
    """Reads of one drive file for one handle."""

    def __init__(self, drive: Any) -> None:
        self._drive = drive
        self._key: tuple[str, object] | None = None
        self._file: Any = None  # the drive's FileReader

    async def read(self, path: str, stamp: object, offset: int, size: int, alone: bool = False) -> bytes:
        """Up to `size` bytes of file `path` at `offset`, fewer only at its end. `stamp` is
        anything that changes when the file's content may have: the file is opened afresh.
        `alone`: no other request is being served (see the drive's `FileReader.read`)."""
        if (path, stamp) != self._key:
            self._file = await self._drive.open_reader(path)
            self._key = (path, stamp)
        return await self._file.read(offset, size, alone)
