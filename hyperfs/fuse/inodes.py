"""Inode numbers for drive paths, stable for the life of a mount.

A Hyperdrive has no inodes, so the mount hands them out: the first time a path is seen it gets
the next number and keeps it until it is unlinked; a rename moves the numbers of the entry and of
everything under it, as on a local file system. An unlinked inode keeps its number (open handles
still use it) but no longer has a path. The numbered paths are indexed by folder, so a rename
costs what it moves, not what the mount has ever seen (rsync renames every file it writes).
"""

from __future__ import annotations

from hyperfs.drive.folder_index import FolderIndex
from hyperfs.errors import FileNotFoundInDrive

ROOT_INODE = 1


def join(parent: str, name: str) -> str:
    """The drive path of `name` inside folder `parent` ("/" is the root)."""
    return parent + name if parent.endswith("/") else parent + "/" + name


def split(path: str) -> tuple[str, str]:
    """(parent folder, name) of a drive path other than the root."""
    parent, _, name = path.rpartition("/")
    return parent or "/", name


class InodeTable:
    """Two-way map between inode numbers and drive paths."""

    def __init__(self) -> None:
        self._ino: dict[str, int] = {"/": ROOT_INODE}
        self._path: dict[int, str | None] = {ROOT_INODE: "/"}
        self._next = ROOT_INODE + 1
        self._folders: FolderIndex[str] = FolderIndex("/", lambda path: split(path)[0], self._ino.__contains__)

    def ino(self, path: str) -> int:
        """The inode of `path`, numbering it on first sight."""
        ino = self._ino.get(path)
        if ino is None:
            ino = self._ino[path] = self._next
            self._path[ino] = path
            self._next += 1
            self._folders.add(path)
        return ino

    def known(self, path: str) -> int | None:
        """The inode of `path` if one was handed out, else None (never numbers it)."""
        return self._ino.get(path)

    def path(self, ino: int) -> str:
        """The path of `ino`; FileNotFoundInDrive once it was unlinked or never existed."""
        path = self._path.get(ino)
        if path is None:
            raise FileNotFoundInDrive(f"inode {ino} has no path (unlinked)")
        return path

    def detach(self, path: str) -> int | None:
        """Take `path` (an unlinked file or removed folder) out of the namespace; returns its inode."""
        ino = self._ino.pop(path, None)
        if ino is not None:
            self._path[ino] = None
            self._folders.prune(path)
        return ino

    def rename(self, old: str, new: str) -> None:
        """Move the numbers of `old` and everything under it to `new`; a replaced `new` is detached."""
        if old == new:
            return
        self.detach(new)
        self._place(new, self._take(old))

    def exchange(self, a: str, b: str) -> None:
        """Swap the numbers of `a` and `b` and of everything under each (neither holds the other)."""
        if a != b:
            under_a, under_b = self._take(a), self._take(b)
            self._place(b, under_a)
            self._place(a, under_b)

    def _take(self, top: str) -> list[tuple[str, int]]:
        """Take the numbers of `top` and everything under it out: (path after `top`, inode)."""
        taken = []
        for path in (top, *self._folders.take(top)):
            ino = self._ino.pop(path, None)
            if ino is not None:
                taken.append((path[len(top) :], ino))
        self._folders.prune(top)
        return taken

    def _place(self, top: str, taken: list[tuple[str, int]]) -> None:
        for rest, ino in taken:
            self._ino[top + rest] = ino
            self._path[ino] = top + rest
            self._folders.add(top + rest)

    def forget(self, ino: int) -> None:
        """Drop an unlinked inode the kernel no longer holds (a live path keeps its number)."""
        if ino != ROOT_INODE and self._path.get(ino, "") is None:
            del self._path[ino]
