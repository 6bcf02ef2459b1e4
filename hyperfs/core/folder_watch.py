"""`FolderWatch`: wake a task when the files in one folder are written, created or renamed
(Linux inotify).

A read-only store follows the process writing its folder: every commit that process logs
appends to RocksDB's log file, every flush writes a table file and the manifest, so a change
to the folder's files is the moment to look again, rather than a timer's beat. Where inotify
is missing (not Linux, or the user's limit of watches reached), `wait` sleeps out its timeout
and says nothing changed, and the caller looks on that beat instead.
"""

from __future__ import annotations

import ctypes
import os

import trio

# <sys/inotify.h>: a file in the folder written, closed after writing, created, renamed into it
# (RocksDB writes CURRENT that way). Reads are left out: the watcher's own reads would wake it.
_IN_MODIFY = 0x002
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_MASK = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE


class FolderWatch:
    """Changes to the files directly in `path`, gathered between one `wait` and the next."""

    def __init__(self, path: str) -> None:
        self._fd = _inotify(path)

    @property
    def watching(self) -> bool:
        """Whether changes are watched (else `wait` only sleeps)."""
        return self._fd is not None

    async def wait(self, timeout: float) -> bool:
        """True once the folder's files changed since the last `wait` returned (at once if they
        did meanwhile), False after `timeout` seconds without a change."""
        fd = self._fd
        if fd is None:
            await trio.sleep(timeout)
            return False
        with trio.move_on_after(timeout):
            while not _drain(fd):
                await trio.lowlevel.wait_readable(fd)
            return True
        return False

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> FolderWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _inotify(path: str) -> int | None:
    """A non-blocking inotify descriptor watching `path`, or None where that cannot be had."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    if add(fd, os.fsencode(path), _MASK) < 0:
        os.close(fd)
        return None
    return fd


def _drain(fd: int) -> bool:
    """Read every event waiting on `fd` (which changed matters, not how): were there any?"""
    got = False
    while True:
        try:
            if not os.read(fd, 64 * 1024):
                return got
        except BlockingIOError:
            return got
        got = True
