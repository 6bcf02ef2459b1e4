"""The FUSE request handlers: a `Drive` seen through the kernel as an ordinary folder.

Each handler resolves inodes to drive paths (`InodeTable`), calls the drive, and turns the drive's
`Stat` into kernel attributes. Writes go to the file's `WriteBuffer` and reach the drive as one
new content run plus one `Node` when the file is flushed, released or fsynced.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat as stat_mod
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pyfuse3
import trio

from hyperfs.core.locking import held
from hyperfs.errors import (
    ContentLostError,
    DecodingError,
    DirectoryNotEmptyError,
    FileChangedError,
    FileExistsInDrive,
    FileNotFoundInDrive,
    IsADirectoryInDrive,
    NameTooLongError,
    NotADirectoryInDrive,
    NotSupportedError,
    UnencodableNameError,
)
from hyperfs.fuse.errors import fuse_errors, log
from hyperfs.drive.drive import Stat, ms_from_ns
from hyperfs.drive.paths import NAME_MAX
from hyperfs.fuse.inodes import InodeTable, join, split
from hyperfs.fuse.open_file import Handle, OpenFile
from hyperfs.fuse.reader import ContentReader
from hyperfs.fuse.write_buffer import CHUNK_SIZE, MemoryBudget, WriteBuffer

# st_blksize: what `cp` and friends size their reads and writes by. 1 MiB, the largest write the
# kernel sends (max_write): the kernel asks us for security.capability at every write() a
# program makes, so cp's 128 KiB default cost 8 round trips per request (512 MiB: 4.5 -> 3.0 s).
BLOCK_SIZE = 1024 * 1024
MS = 1_000_000  # drive times are milliseconds since the epoch (DEP-0000 Stat.mtime/ctime)
# A file written from empty starts streaming into the drive once it is this big (smaller ones
# are appended whole when closed: one open_write each, as before).
STREAM_START = 4 * 1024 * 1024
# A streaming file's writes wait while this much is not in the drive yet: its buffer holds only
# that (below WriteBuffer's memory bound, so no temporary file), and the CPU goes to storing it.
STREAM_AHEAD = 4 * 1024 * 1024
# What the buffers of all the files open for writing may hold in memory together (each also
# has WriteBuffer's own limit); past it they spill to temporary files.
WRITE_MEMORY = 32 * 1024 * 1024


def decode_name(name: bytes) -> str:
    """A directory entry name from the kernel as a drive name (UTF-8, at most NAME_MAX bytes)."""
    if len(name) > NAME_MAX:
        raise NameTooLongError(f"name longer than {NAME_MAX} bytes")
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise UnencodableNameError(f"{name!r}: drive names must be UTF-8") from None


class DriveOperations(pyfuse3.Operations):
    """pyfuse3 handlers over one `Drive` (writable unless `read_only` or the drive is)."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    serving = 0  # requests being answered now (counted by `fuse_errors`)

    def __init__(
        self,
        drive: Any,
        *,
        read_only: bool = False,
        cache_timeout: float = 300.0,
        spill_dir: str | None = None,
        store_dir: str | None = None,
        mountpoint: str | None = None,
    ):
        super().__init__()
        self.drive = drive
        # Where the kernel shows it: a flush may ask the kernel for a file's size (`_settle_size`).
        self.mountpoint = mountpoint
        self.read_only = read_only or not drive.writable
        # The kernel gathers small writes into large ones; it is the only writer of a writable
        # mount (a read-only one is the one that changes from elsewhere), so its cache is right.
        self.enable_writeback_cache = not self.read_only
        self.inodes = InodeTable()
        self._cache_timeout = cache_timeout
        # Spilled buffers go beside the store, on the disk that must hold their content anyway
        # (the system's temporary folder is often a tmpfs: memory again, and smaller).
        self._spill_dir = spill_dir or store_dir
        self._write_memory = MemoryBudget(WRITE_MEMORY)
        self._store_dir = store_dir or "/"
        self._files: dict[int, OpenFile] = {}
        self._handles: dict[int, Handle] = {}
        self._readers: dict[int, ContentReader] = {}
        self._dirs: dict[int, list[str]] = {}
        self._dir_paths: dict[int, str] = {}
        self._fh = itertools.count(1)
        # Held by an unlink, or a rename (which may replace a file), from its look for the
        # name's open files until the name is gone, and by an open: no handle opens an inode in
        # between, which would find its name gone and no copy of its content kept.
        self._unlinking = trio.Lock()
        # Where streaming files are fed to the drive in the background (set by `serve`); without
        # one, a write that fills a chunk feeds it before it returns.
        self.nursery: trio.Nursery | None = None

    # --- attributes -----------------------------------------------------------------------------

    def _attrs(self, ino: int, st: Any) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = ino
        attrs.generation = 0
        attrs.entry_timeout = self._cache_timeout
        attrs.attr_timeout = self._cache_timeout
        attrs.st_mode = st.mode
        # A folder without a count from the drive says 1, which `find` reads as "unknown".
        attrs.st_nlink = st.nlink or 1
        attrs.st_uid = st.uid or 0
        attrs.st_gid = st.gid or 0
        size = st.size or 0
        mtime_ns = (st.mtime or 0) * MS
        ctime_ns = (st.ctime or st.mtime or 0) * MS
        open_file = self._files.get(ino)
        if open_file is not None:
            if open_file.buffer is not None:
                size = open_file.buffer.size
            if open_file.dirty or "mtime" in open_file.pending:
                mtime_ns = ctime_ns = open_file.mtime_ns
            if "mode" in open_file.pending:
                attrs.st_mode = stat_mod.S_IFMT(st.mode) | open_file.pending["mode"]
            attrs.st_uid = open_file.pending.get("uid", attrs.st_uid)
            attrs.st_gid = open_file.pending.get("gid", attrs.st_gid)
        if stat_mod.S_ISLNK(st.mode):
            size = len(os.fsencode(st.linkname or ""))
        attrs.st_size = size
        attrs.st_blksize = BLOCK_SIZE
        attrs.st_blocks = (size + 511) // 512
        attrs.st_atime_ns = mtime_ns
        attrs.st_mtime_ns = mtime_ns
        attrs.st_ctime_ns = ctime_ns
        return attrs

    def _unreadable(self, path: str) -> pyfuse3.EntryAttributes:
        """A listed entry whose Stat is corrupt: listed with attributes the kernel may not keep,
        so its next look is a lookup, which fails with EIO. As on a local file system with a
        bad inode, `ls -l` says it cannot access that entry and shows the rest."""
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = self.inodes.ino(path)
        attrs.st_mode = stat_mod.S_IFREG
        attrs.entry_timeout = attrs.attr_timeout = 0  # pyfuse3's default is 300 s
        return attrs

    async def _stat(self, path: str) -> Any:
        open_file = self._fresh(path)
        if open_file is not None:
            # Created here and not in the drive yet: answered without a failing lookup (the
            # kernel asks a file being written for its attributes and security.capability at
            # every write, chown and chmod: ~15 requests a file in `tar x`).
            return Stat(mode=stat_mod.S_IFREG, mtime=open_file.mtime_ns // MS)
        return await self.drive.lstat(path)

    def _fresh(self, path: str) -> OpenFile | None:
        """The open file created at `path` whose first Node is not written yet, if any."""
        ino = self.inodes.known(path)
        open_file = self._files.get(ino) if ino is not None else None
        return open_file if open_file is not None and open_file.fresh else None

    def _fresh_under(self, folder: str) -> list[str]:
        """Paths of files created and still unwritten anywhere under `folder`."""
        prefix = folder.rstrip("/") + "/"
        return [
            path
            for f in self._files.values()
            if f.fresh and not f.unlinked and (path := self.inodes.path(f.ino)).startswith(prefix)
        ]

    async def _materialize(self, path: str) -> None:
        """Write the first Node of a created file at `path` now (a name operation needs it)."""
        open_file = self._fresh(path)
        if open_file is not None:
            await self._commit(open_file)

    async def _entry(self, path: str) -> pyfuse3.EntryAttributes:
        st = await self._stat(path)
        return self._attrs(self.inodes.ino(path), st)

    def _child(self, parent_inode: int, name: bytes) -> str:
        return join(self.inodes.path(parent_inode), decode_name(name))

    def _writable(self) -> None:
        if self.read_only:
            raise pyfuse3.FUSEError(errno.EROFS)

    @fuse_errors
    async def lookup(self, parent_inode, name, ctx=None):
        try:
            return await self._entry(self._child(parent_inode, name))
        except (FileNotFoundInDrive, UnencodableNameError):
            # A negative entry the kernel may cache: every later create comes through us (and a
            # name that is not UTF-8 is in no drive; making one fails with EILSEQ).
            attrs = pyfuse3.EntryAttributes()
            attrs.st_ino = 0
            attrs.entry_timeout = self._cache_timeout
            return attrs

    @fuse_errors
    async def getattr(self, inode, ctx=None):
        return self._attrs(inode, await self._stat_ino(inode))

    async def _stat_ino(self, inode: int) -> Any:
        open_file = self._files.get(inode)
        if open_file is not None and open_file.unlinked:
            return open_file.stat
        return await self._stat(self.inodes.path(inode))

    @fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        self._writable()
        open_file = self._files.get(inode)
        if fields.update_size and (open_file is not None or (await self._stat_ino(inode)).size != attr.st_size):
            # A truncate by name changes the file as a handle's would, and follows it through
            # renames meanwhile (the kernel chose the inode, not the name).
            async with self._holding(inode) as resized:
                await self._truncate(resized, attr.st_size, by=fh)
                if not resized.writers:
                    await self._commit(resized)
        changes = _attr_changes(attr, fields)
        if open_file is None:
            await self._change_attrs(inode, changes)
        else:
            # Decided while no commit of the file is under way (it holds `admit`): one could
            # take the pending changes into its Node or not, and clears them either way.
            async with held(open_file.admit):
                if open_file.unlinked or open_file.dirty:
                    # Kept for the Node the content goes out with: one append, not one per
                    # change (tar and cp send chown, chmod and utimens for every file they write).
                    open_file.pending.update(changes)
                    if "mtime" in changes:
                        open_file.mtime_ns = changes["mtime"] * MS
                else:
                    await self._change_attrs(inode, changes)
        return self._attrs(inode, await self._stat_ino(inode))

    async def _change_attrs(self, inode: int, changes: dict[str, int]) -> None:
        """Give the inode's drive entry the mode, owner and mtime in `changes` (one Node, if any
        differs), wherever a rename has moved it by the time the drive's lock is held."""
        if changes and self.inodes.path(inode) != "/":  # the format has no entry for the root
            await self.drive.set_attributes(lambda: self.inodes.path(inode), **changes)

    @fuse_errors
    async def forget(self, inode_list):
        for inode, _ in inode_list:
            if inode not in self._files:
                self.inodes.forget(inode)

    # --- names ----------------------------------------------------------------------------------

    @fuse_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        self._writable()
        path = self._child(parent_inode, name)
        await self.drive.mkdir(path, mode=stat_mod.S_IMODE(mode))
        return await self._entry(path)

    @fuse_errors
    async def rmdir(self, parent_inode, name, ctx):
        self._writable()
        path = self._child(parent_inode, name)
        if self._fresh_under(path):
            raise DirectoryNotEmptyError(f"{path} is not empty")
        await self.drive.rmdir(path)
        self.inodes.detach(path)

    @fuse_errors
    async def unlink(self, parent_inode, name, ctx):
        self._writable()
        path = self._child(parent_inode, name)
        st = await self._stat(path)
        if stat_mod.S_ISDIR(st.mode):
            raise IsADirectoryInDrive(f"{path} is a folder")
        async with held(self._unlinking):
            await self._materialize(path)
            await self._keep_if_open(path, st)
            await self.drive.unlink(path)
            self.inodes.detach(path)

    async def _keep_if_open(self, path: str, st: Any) -> None:
        """Before `path` goes away (unlink, or replaced by a rename), give its open handles their
        own copy of the content, as a local file system keeps an unlinked inode's data."""
        ino = self.inodes.known(path)
        open_file = self._files.get(ino) if ino is not None else None
        if open_file is not None:
            await self._buffer(open_file)
            await self._end_stream(open_file)
            open_file.stat = st
            open_file.unlinked = True

    @fuse_errors
    async def symlink(self, parent_inode, name, target, ctx):
        self._writable()
        path = self._child(parent_inode, name)
        await self.drive.symlink(os.fsdecode(target), path)
        return await self._entry(path)

    @fuse_errors
    async def readlink(self, inode, ctx):
        return os.fsencode(await self.drive.readlink(self.inodes.path(inode)))

    @fuse_errors
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        # A regular file is an empty file (`os.mknod(path)`, `mknod` without a type). A FIFO or
        # socket is an entry the kernel does the rest for (it never opens one through us);
        # device nodes are refused (the drive's `mknod`).
        self._writable()
        path = self._child(parent_inode, name)
        if not stat_mod.S_ISREG(mode):
            await self.drive.mknod(path, mode, uid=ctx.uid, gid=ctx.gid)
            return await self._entry(path)
        info, _ = await self.create(parent_inode, name, mode, os.O_WRONLY | os.O_CREAT | os.O_EXCL, ctx)
        await self.release(info.fh)
        return await self._entry(path)

    @fuse_errors
    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise NotSupportedError("a drive cannot hold hard links")

    @fuse_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        self._writable()
        if flags & ~(pyfuse3.RENAME_NOREPLACE | pyfuse3.RENAME_EXCHANGE):
            # RENAME_WHITEOUT (overlayfs's): a device node, which the format has no entry for.
            raise pyfuse3.FUSEError(errno.EINVAL)
        async with held(self._unlinking):
            await self._rename(self._child(parent_inode_old, name_old), self._child(parent_inode_new, name_new), flags)

    async def _rename(self, old: str, new: str, flags: int) -> None:
        """`rename` of drive paths, holding `_unlinking`."""
        await self._materialize(old)
        await self._materialize(new)
        # The inodes move the moment the drive's tree does, so a commit meanwhile (another
        # handle's close of a file inside) finds its Node's name under one or the other.
        if flags & pyfuse3.RENAME_EXCHANGE:
            await self.drive.exchange(old, new, moved=lambda: self.inodes.exchange(old, new))
            return
        src = await self._stat(old)
        try:
            dst = await self._stat(new)
        except FileNotFoundInDrive:
            dst = None
        if dst is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise FileExistsInDrive(f"{new} exists")
            if old == new:
                return
            if stat_mod.S_ISDIR(src.mode) and not stat_mod.S_ISDIR(dst.mode):
                raise NotADirectoryInDrive(f"{new} is not a folder")
            if not stat_mod.S_ISDIR(src.mode) and stat_mod.S_ISDIR(dst.mode):
                raise IsADirectoryInDrive(f"{new} is a folder")
            if stat_mod.S_ISDIR(dst.mode) and (self._fresh_under(new) or await self.drive.readdir(new)):
                raise DirectoryNotEmptyError(f"{new} is not empty")
            await self._keep_if_open(new, dst)
        await self.drive.rename(old, new, moved=lambda: self.inodes.rename(old, new))

    # --- folders --------------------------------------------------------------------------------

    @fuse_errors
    async def opendir(self, inode, ctx):
        path = self.inodes.path(inode)
        st = await self._stat(path)
        if not stat_mod.S_ISDIR(st.mode):
            raise NotADirectoryInDrive(f"{path} is not a folder")
        fh = next(self._fh)
        self._dir_paths[fh] = path
        return fh

    @fuse_errors
    async def readdir(self, fh, start_id, token):
        path = self._dir_paths[fh]
        # The listing is taken once per opendir: offsets index into it, so entries added or
        # removed meanwhile neither repeat nor make others vanish.
        names = self._dirs.get(fh)
        if names is None:
            # In the drive's order (oldest change first), then files created and not written
            # yet: ls sorts for itself, and rm -rf then takes a big folder's entries oldest
            # first, which the format removes with O(1) re-encoding (`Listing.without`).
            fresh = sorted(split(p)[1] for p in self._fresh_under(path) if split(p)[0] == path)
            names = [".", "..", *dict.fromkeys([*await self.drive.readdir(path), *fresh])]
            self._dirs[fh] = names
        # "." and ".." as on a local file system (the kernel counts no lookup for them).
        dots = {".": path, "..": split(path)[0]}
        for index in range(start_id, len(names)):
            child = dots.get(names[index]) or join(path, names[index])
            try:
                attrs = await self._entry(child)
            except FileNotFoundInDrive:
                continue  # removed since the listing was taken
            except DecodingError:
                attrs = self._unreadable(child)
            if not pyfuse3.readdir_reply(token, names[index].encode("utf-8"), attrs, index + 1):
                return

    @fuse_errors
    async def releasedir(self, fh):
        self._dirs.pop(fh, None)
        self._dir_paths.pop(fh, None)

    # --- files ----------------------------------------------------------------------------------

    @fuse_errors
    async def open(self, inode, flags, ctx):
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        if writable or flags & os.O_TRUNC:
            self._writable()
        async with held(self._unlinking):
            self.inodes.path(inode)  # ENOENT for a stale inode
            return await self._open(inode, flags)

    async def _open(self, inode: int, flags: int) -> pyfuse3.FileInfo:
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        open_file = self._hold(inode, writable)
        fh = next(self._fh)
        self._handles[fh] = Handle(open_file, writable=writable, append=bool(flags & os.O_APPEND))
        if flags & os.O_TRUNC:
            await self._truncate(open_file, 0, by=fh)
        # Every change to a file of a writable mount comes through here, so the kernel's page
        # cache stays right across opens; live changes invalidate it explicitly.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @fuse_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        self._writable()
        path = self._child(parent_inode, name)
        try:
            await self._stat(path)
        except FileNotFoundInDrive:
            await self._stat(self.inodes.path(parent_inode))  # ENOENT/ENOTDIR for the folder
            # The file is written once, when its content is: until then it lives here.
            ino = self.inodes.ino(path)
            info = await self._open(ino, flags | os.O_TRUNC)
            open_file = self._files[ino]
            open_file.fresh = True
            open_file.pending.update(mode=stat_mod.S_IMODE(mode), uid=ctx.uid, gid=ctx.gid)
            return info, await self._entry(path)
        if flags & os.O_EXCL:
            raise FileExistsInDrive(f"{path} exists")
        ino = self.inodes.ino(path)
        info = await self._open(ino, flags)
        return info, await self._entry(path)

    @fuse_errors
    async def read(self, fh, off, size):
        handle = self._handles[fh]
        open_file = handle.file
        if open_file.buffer is not None:
            if off >= open_file.buffer.base:
                return open_file.buffer.read(off, size)
            data = await self._read_streamed(open_file, off, size)
            if data is not None:
                return data
        reader = self._readers.get(fh)
        if reader is None:
            reader = self._readers[fh] = ContentReader(self.drive)
        # Its content changes with a commit through this mount, or with the drive from elsewhere.
        stamp = (open_file.committed, self.drive.version)
        return await reader.read(self.inodes.path(open_file.ino), stamp, off, size, alone=self.serving == 1)

    @fuse_errors
    async def write(self, fh, off, buf):
        handle = self._handles[fh]
        open_file = handle.file
        # One at a time and in the order the kernel sent them (each takes `admit` before its
        # first wait, with no pause when it is free), so a write held back below never lets a
        # later one overtake it.
        async with held(open_file.admit):
            buffer = await self._buffer(open_file)
            if handle.append and not self.enable_writeback_cache:
                off = buffer.size  # with writeback the kernel places appends itself
            while open_file.feeding and open_file.buffer.size - open_file.fed + len(buf) > STREAM_AHEAD:
                async with open_file.lock:  # the feed hands over one chunk per hold of the lock
                    pass
            if off < open_file.fed:
                async with open_file.lock:  # what was streamed changes: the buffer goes whole
                    await self._take_back(open_file)
            if open_file.lost is not None:
                raise open_file.lost
            if off > open_file.buffer.size:
                self.drive.check_room(off - open_file.buffer.size)  # the zeros of the gap
            self._changed_below(open_file, off, buf)
            open_file.buffer.write(off, buf)
            self._changed(open_file)
            if self._should_feed(open_file):
                if self.nursery is None:
                    await self._feed(open_file)
                else:
                    # The kernel's next writes land in the buffer while the drive hashes and stores.
                    open_file.feeding = True
                    self.nursery.start_soon(self._feed, open_file)
        return len(buf)

    @fuse_errors
    async def flush(self, fh):
        await self._flush(self._handles[fh].file)

    @fuse_errors
    async def fsync(self, fh, datasync):
        await self._flush(self._handles[fh].file)
        await self.drive.flush()

    @fuse_errors
    async def release(self, fh):
        handle = self._handles.pop(fh)
        self._readers.pop(fh, None)
        open_file = handle.file
        try:
            await self._flush(open_file)
        finally:
            self._let_go(open_file, handle.writable)

    def _hold(self, inode: int, writable: bool) -> OpenFile:
        """Count one more handle on the inode's OpenFile (made on the first)."""
        open_file = self._files.get(inode)
        if open_file is None:
            open_file = self._files[inode] = OpenFile(inode)
        open_file.handles += 1
        open_file.writers += writable
        return open_file

    def _let_go(self, open_file: OpenFile, writable: bool) -> None:
        """Count one handle less; the last one closes the OpenFile."""
        open_file.handles -= 1
        open_file.writers -= writable
        if open_file.handles == 0:
            del self._files[open_file.ino]
            open_file.close()
            if open_file.unlinked:
                self.inodes.forget(open_file.ino)

    @asynccontextmanager
    async def _holding(self, inode: int) -> AsyncIterator[OpenFile]:
        """The inode's OpenFile, held as by a read-only handle meanwhile (one opened then
        shares it)."""
        open_file = self._hold(inode, writable=False)
        try:
            yield open_file
        finally:
            self._let_go(open_file, writable=False)

    async def flush_all(self) -> None:
        """Write every open file's pending content (before an unmount)."""
        for open_file in list(self._files.values()):
            try:
                await self._commit(open_file)
            except Exception:  # noqa: BLE001 - keep flushing the others
                log.exception("could not flush inode %d", open_file.ino)

    def _new_buffer(self) -> WriteBuffer:
        return WriteBuffer(spill_dir=self._spill_dir, budget=self._write_memory)

    def _changed(self, open_file: OpenFile) -> None:
        open_file.changed()
        open_file.mtime_ns = time.time_ns()

    async def _truncate(self, open_file: OpenFile, size: int, *, by: int | None) -> None:
        """The kernel sets an open file's size (an O_TRUNC or a truncate through handle `by`,
        None for one by name). It holds the file's `admit` and lock, as writes and commits do:
        a commit (of another handle's close) reading the buffer, or a stream handing on a
        chunk, finishes first."""
        through = self._handles.get(by) if by is not None else None
        if self.enable_writeback_cache and open_file.writers > (through is not None and through.writable):
            open_file.size_unsure = True
        async with held(open_file.admit), held(open_file.lock):
            await self._cut(open_file, size)
            self._changed(open_file)
            open_file.resized_at = open_file.generation

    async def _cut(self, open_file: OpenFile, size: int) -> None:
        """Cut or extend an open file's content to `size`, for a caller that holds its `admit`
        and lock. Cut to nothing, it is new content from the start that may stream (again); a
        cut into what was streamed ends the stream."""
        if size == 0:
            open_file.intact = None
            open_file.stop_stream()
            open_file.lost = None
            if open_file.buffer is not None:
                open_file.buffer.close()
            open_file.buffer = self._new_buffer()
            open_file.streamable = not open_file.unlinked
            return
        if size < open_file.fed:
            await self._take_back(open_file)
        if open_file.lost is not None:
            raise open_file.lost
        buffer = await self._filled_buffer(open_file)
        self._changed_below(open_file, size)  # once filled: a fill takes the drive's content as intact
        self.drive.check_room(size - buffer.size)
        buffer.truncate(size)

    async def _flush(self, open_file: OpenFile) -> None:
        """A handle's flush, fsync or close: the file's content, at the kernel's size, to the drive."""
        await self._settle_size(open_file)
        await self._commit(open_file)

    async def _settle_size(self, open_file: OpenFile) -> None:
        """Cut a file whose size is unsure back to the kernel's size when its buffer runs past it.

        With the writeback cache the kernel applies an O_TRUNC to its own cache only after we
        answered it, and does not hold other writers off meanwhile: bytes one of them wrote
        just then still reach us (after the cut), while the kernel drops them. Its size is then
        the truth. Otherwise it never ends below our buffer: the kernel sends only bytes within
        its size, and after a truncate (which it takes on only once we answered) nothing is cut.
        Asked at every flush and close of such a file, when the kernel has sent what it holds
        for it: one that comes while the kernel is still inside an O_TRUNC open finds the old
        size, and the opener's own flush asks again. What runs past is cut even if committed
        already; a change while asking leaves it to the next flush."""
        generation = open_file.generation
        if not open_file.size_unsure or open_file.unlinked or not self.mountpoint:
            return
        if generation == open_file.resized_at:
            return
        for _ in range(3):
            path = self.inodes.path(open_file.ino)
            # Through the mount, so the kernel asks us in turn: from a thread, holding no lock.
            size = await trio.to_thread.run_sync(kernel_size, self.mountpoint, path, open_file.ino)
            if size is not None or open_file.unlinked or self.inodes.path(open_file.ino) == path:
                break  # else a rename moved the file meanwhile: ask at its new name
        if size is None:
            return
        async with held(open_file.admit), held(open_file.lock):
            if open_file.generation != generation or open_file.unlinked:
                return
            path = self.inodes.path(open_file.ino)
            buffer = open_file.buffer
            # A file streamed and committed has its content in the drive only.
            ours = buffer.size if buffer is not None else (await self._stat(path)).size or 0
            if size < ours:
                log.info("%s: the kernel dropped its last %d bytes; cut to its size", path, ours - size)
                await self._cut(open_file, size)
                self._changed(open_file)

    def _should_feed(self, open_file: OpenFile) -> bool:
        """Has a streamable file gained enough unfed bytes to go to the drive now?"""
        if not open_file.streamable or open_file.feeding or open_file.lock.locked():
            return False
        ahead = CHUNK_SIZE if open_file.stream is not None else STREAM_START
        return open_file.buffer.size - open_file.fed >= ahead

    async def _feed(self, open_file: OpenFile) -> None:
        """Hand what a streaming file gained to the drive while it is written (the content core
        hashes and stores it meanwhile, instead of all at close), a held write (at most a chunk)
        at a time, and drop it from its buffer. The lock is taken per piece, so a write waiting
        on the stream goes next.
        A failure ends the stream; what it took is lost only if the buffer had dropped some."""
        try:
            while True:
                async with open_file.lock:
                    buffer = open_file.buffer
                    if not open_file.streamable or buffer is None or buffer.size - open_file.fed < CHUNK_SIZE:
                        return
                    if open_file.stream is None:
                        path = self.inodes.path(open_file.ino)
                        open_file.stream = await self.drive.open_write(path, **self._node_attrs(open_file))
                        open_file.stream_path = path
                    chunk = buffer.read_run(open_file.fed, CHUNK_SIZE)
                    # Counted before the await: a write below `fed` meanwhile must end the stream.
                    open_file.fed += len(chunk)
                    # Finished even when the mount stops: a half-taken chunk would spoil the stream
                    # that the final flush still closes.
                    with trio.CancelScope(shield=True):
                        await open_file.stream.write(chunk)
                    buffer.drop_before(open_file.fed)
        except Exception as err:  # noqa: BLE001 - the close writes the buffer whole, if it can
            log.exception("streaming inode %d into the drive stopped", open_file.ino)
            if open_file.buffer is not None and open_file.buffer.base:
                open_file.lost = ContentLostError(f"{open_file.stream_path}: streaming into the drive failed: {err!r}", err)
            open_file.stop_stream()
        finally:
            open_file.feeding = False

    async def _read_streamed(self, open_file: OpenFile, off: int, size: int) -> bytes | None:
        """Bytes of a streaming file from below its buffer's base: the stream has them (None:
        the file was committed meanwhile, and the drive has them)."""
        async with open_file.lock:  # the stream is not mid-write, nor ended meanwhile
            buffer = open_file.buffer
            if open_file.lost is not None:
                raise open_file.lost
            if buffer is None:
                return None
            if off >= buffer.base:
                return buffer.read(off, size)
            head = await open_file.stream.read(off, min(size, buffer.base - off))
            return head + buffer.read(buffer.base, size - len(head))

    async def _end_stream(self, open_file: OpenFile) -> None:
        """End the file's stream (a change to what it took, an unlink, a rename) after taking
        back what the buffer dropped, so the buffer holds the whole content again."""
        async with held(open_file.admit), held(open_file.lock):
            await self._take_back(open_file)

    async def _take_back(self, open_file: OpenFile) -> None:
        """`_end_stream` for a caller that holds the file's `admit` and lock."""
        buffer = open_file.buffer
        if buffer is not None and buffer.base and open_file.lost is None:
            open_file.buffer = await self._filled(self._streamed_content(open_file, buffer))
            buffer.close()
        open_file.stop_stream()

    @staticmethod
    async def _streamed_content(open_file: OpenFile, buffer: WriteBuffer) -> AsyncIterator[bytes]:
        """A streaming file's whole content: what `buffer` dropped, from the stream, then the rest."""
        for offset in range(0, buffer.base, CHUNK_SIZE):
            size = min(CHUNK_SIZE, buffer.base - offset)
            chunk = await open_file.stream.read(offset, size)
            if len(chunk) != size:
                raise ContentLostError(f"{open_file.stream_path}: the drive lost what was streamed")
            yield chunk
        for chunk in buffer.chunks(start=buffer.base):
            yield chunk

    async def _filled(self, chunks: AsyncIterator[bytes]) -> WriteBuffer:
        """A new buffer holding `chunks` front to back (closed again if they fail)."""
        buffer = self._new_buffer()
        offset = 0
        try:
            async for chunk in chunks:
                buffer.write(offset, chunk)
                offset += len(chunk)
        except BaseException:
            buffer.close()
            raise
        return buffer

    def _node_attrs(self, open_file: OpenFile) -> dict[str, int]:
        """The attributes the file's next Node gets (mode/uid/gid set while open, mtime)."""
        attrs = {k: v for k, v in open_file.pending.items() if k != "mtime"}
        attrs["mtime"] = open_file.mtime_ns // MS
        return attrs

    async def _buffer(self, open_file: OpenFile) -> WriteBuffer:
        """The file's buffer, filled with its current drive content on first use."""
        if open_file.buffer is not None:
            return open_file.buffer  # no wait behind a stream's append
        async with held(open_file.lock):
            return await self._filled_buffer(open_file)

    @staticmethod
    def _changed_below(open_file: OpenFile, offset: int, data: bytes | None = None) -> None:
        """Bytes from `offset` on change (to `data`, for a write): the last commit's content is
        no longer the buffer's start if it reaches past `offset`, unless they are the bytes it
        has there (the writeback cache sends a page whole when a write lands in it: an append
        of a line resends the start of the last page)."""
        intact = open_file.intact
        if intact is None or offset >= intact.size:
            return
        if data is not None:
            overlap = min(len(data), intact.size - offset)
            if open_file.buffer.read(offset, overlap) == memoryview(data)[:overlap]:
                return
        open_file.intact = None

    async def _filled_buffer(self, open_file: OpenFile) -> WriteBuffer:
        """`_buffer` for a caller that holds the file's lock."""
        if open_file.buffer is None:
            path = self.inodes.path(open_file.ino)
            st = await self.drive.lstat(path)
            open_file.buffer = await self._filled(self.drive.open_read(path))
            # The drive's content, whole: a commit goes on after it (`echo line >> log`).
            open_file.intact = st if st.is_file() and st.size == open_file.buffer.size else None
        return open_file.buffer

    async def _commit(self, open_file: OpenFile) -> None:
        """Give the drive the file's new content and its Node (appended with others closed
        meanwhile, see `Drive.grouped`), unless nothing changed since last time.
        Writes wait meanwhile: a streamed file's buffer is let go once the drive holds it all."""
        async with held(open_file.admit), held(open_file.lock):
            if not open_file.dirty or open_file.unlinked or open_file.buffer is None:
                return
            if open_file.lost is not None:
                raise open_file.lost
            generation = open_file.generation
            path = self.inodes.path(open_file.ino)
            if open_file.stream is not None and path != open_file.stream_path:
                await self._take_back(open_file)  # renamed while streaming: written whole at its new name
            writer, start = open_file.stream, open_file.fed
            open_file.stream, open_file.streamable, open_file.fed = None, False, 0
            intact, open_file.intact = open_file.intact, None
            buffer = open_file.buffer
            try:
                if writer is None and intact is not None:
                    # Only what came after the last commit goes in: a log appended to and
                    # fsynced a line at a time, rewritten whole at each fsync, took O(n²).
                    try:
                        st = await self._write_from(open_file, path, intact, intact.size)
                    except FileChangedError:  # changed in the drive meanwhile: written whole
                        st = await self._write_from(open_file, path, None, 0)
                else:
                    st = await self._write_from(open_file, path, None, start, writer)
            except BaseException as err:
                if buffer.base:
                    open_file.lost = ContentLostError(f"{path}: writing it into the drive failed: {err!r}", err)
                raise
            if buffer.base:
                # Its start is only in the drive: a later write reads it back from there.
                buffer.close()
                open_file.buffer = None
            else:
                open_file.intact = st
            open_file.committed = generation
            open_file.pending.clear()
            open_file.fresh = False

    async def _write_from(
        self, open_file: OpenFile, path: str, after: Any, start: int, writer: Any = None
    ) -> Any:
        """Write the buffer from `start` on through `writer` (else a new one: going on `after`
        that Stat's content when given) and put the file's Node; returns its Stat. Hold the
        file's `admit` and lock."""
        attrs = self._node_attrs(open_file)
        if writer is None:
            writer = await (self.drive.open_append(path, after, **attrs) if after is not None else self.drive.open_write(path, **attrs))
        try:
            for chunk in open_file.buffer.chunks(start=start):
                await writer.write(chunk)
            # Named as it is when the Node is put: its folder may be renamed meanwhile.
            return await writer.close(**attrs, path=lambda: self.inodes.path(open_file.ino))
        except BaseException:
            writer.abort()
            raise

    # --- extended attributes and the file system ------------------------------------------------

    @fuse_errors
    async def getxattr(self, inode, name, ctx):
        metadata = (await self._stat_ino(inode)).metadata or {}
        try:
            return bytes(metadata[os.fsdecode(name)])
        except KeyError:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None

    @fuse_errors
    async def listxattr(self, inode, ctx):
        metadata = (await self._stat_ino(inode)).metadata or {}
        return [os.fsencode(key) for key in metadata]

    @fuse_errors
    async def setxattr(self, inode, name, value, ctx):
        self._writable()
        path = self.inodes.path(inode)
        if name.startswith(b"system.") or path == "/":
            # POSIX ACLs and other kernel-interpreted names: refusing them makes `cp -a` and
            # friends fall back to chmod, which the drive stores. The format has no entry for
            # the root to keep any in.
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        await self._materialize(path)
        await self.drive.set_metadata(lambda: self.inodes.path(inode), os.fsdecode(name), bytes(value))

    @fuse_errors
    async def removexattr(self, inode, name, ctx):
        self._writable()
        path = self.inodes.path(inode)
        key = os.fsdecode(name)
        if key not in ((await self._stat(path)).metadata or {}):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        await self.drive.set_metadata(lambda: self.inodes.path(inode), key, None)

    @fuse_errors
    async def statfs(self, ctx):
        disk = os.statvfs(self._store_dir)
        data = pyfuse3.StatvfsData()
        data.f_bsize = BLOCK_SIZE
        data.f_frsize = disk.f_frsize
        data.f_blocks = disk.f_blocks
        data.f_bfree = disk.f_bfree
        data.f_bavail = 0 if self.read_only else disk.f_bavail
        data.f_files = disk.f_files
        data.f_ffree = disk.f_ffree
        data.f_favail = 0 if self.read_only else disk.f_favail
        data.f_namemax = NAME_MAX
        return data


def kernel_size(mountpoint: str, path: str, ino: int) -> int | None:
    """The size the kernel gives inode `ino`, found at `path` in the mount (None: that name
    leads elsewhere or nowhere now). Blocks until the mount answers the kernel's requests."""
    try:
        st = os.lstat(os.path.join(mountpoint, path.lstrip("/")))
    except OSError:
        return None
    return st.st_size if st.st_ino == ino else None


def _attr_changes(attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields) -> dict[str, int]:
    """What a setattr sets, as drive values: permission bits, owner, mtime in ms (the format
    keeps no atime, so an atime alone changes nothing)."""
    changes: dict[str, int] = {}
    if fields.update_mode:
        changes["mode"] = stat_mod.S_IMODE(attr.st_mode)
    if fields.update_uid:
        changes["uid"] = attr.st_uid
    if fields.update_gid:
        changes["gid"] = attr.st_gid
    if fields.update_mtime:
        changes["mtime"] = ms_from_ns(attr.st_mtime_ns)
    return changes
