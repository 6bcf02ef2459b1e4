"""`Drive`: a DEP-0000 Hyperdrive (hyperdrive 9 format) over a metadata core and a content core.

Block 0 of the metadata core is an `Index` naming the content core; every later block is an
append-tree `Node` whose value is a `Stat` pointing at a run of content blocks. Files are cut in
64 KiB content blocks. Renames and attribute changes append new `Node`s pointing at the same
content. Lookups go through the append-tree's per-folder listing cache (derived from the log,
resolved lazily from the head), so they cost a dict step per path component.
"""

from __future__ import annotations

import logging
import stat as stat_mod
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any

import trio
from google.protobuf.message import DecodeError

from hyperfs.core.corestore import Corestore
from hyperfs.core.hypercore import Hypercore, append_together
from hyperfs.core.locking import held
from hyperfs.core.serial_thread import SerialThread
from hyperfs.drive import schema_pb2
from hyperfs.drive.append_tree import (
    AppendTree,
    Change,
    Listing,
    Names,
    Node,
    Unreadable,
    WeightedCache,
    join,
    listing_weight,
)
from hyperfs.drive.paths import holdable, normalize
from hyperfs.drive.read_ahead import ReadAhead
from hyperfs.errors import (
    BlockNotAvailableError,
    DecodingError,
    DirectoryNotEmptyError,
    FileChangedError,
    FileExistsInDrive,
    FileNotFoundInDrive,
    InvalidArgumentError,
    InvalidPathError,
    IsADirectoryInDrive,
    NotADirectoryInDrive,
    NotSupportedError,
    ReadOnlyDriveError,
    StorageError,
)

log = logging.getLogger(__name__)

BLOCK_SIZE = 65536  # hyperdrive 9's writeFile chunking
DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
SYMLINK_MODE = 0o777
# The kinds of entry that are only a name and attributes: a drive keeps them as a local file
# system does (`rsync -a` and `cp -a` recreate a home folder's sockets and FIFOs), though no
# content goes through them. Device nodes are not among them: a drive has no field for the
# device number, and a FUSE mount does not let them be opened anyway.
SPECIAL_TYPES = (stat_mod.S_IFIFO, stat_mod.S_IFSOCK)
_CONTENTLESS = frozenset((*SPECIAL_TYPES, stat_mod.S_IFCHR, stat_mod.S_IFBLK))
_KINDS = {
    stat_mod.S_IFDIR: "folder",
    stat_mod.S_IFLNK: "symlink",
    stat_mod.S_IFIFO: "FIFO",
    stat_mod.S_IFSOCK: "socket",
    stat_mod.S_IFCHR: "character device",
    stat_mod.S_IFBLK: "block device",
}
MAX_SYMLINKS = 40
# What each of the two caches of folder facts may weigh (`Drive._subfolders`, `_folder_entries`).
FOLDER_CACHE_BYTES = 8 * 1024 * 1024
_FOLDER_ENTRIES_OVERHEAD, _FOLDER_ENTRY = 300, 70  # bytes of a folder's dict, and of an entry
# A batch (or a streaming writer) appends once this much content or this many nodes wait.
FLUSH_BYTES = 4 * 1024 * 1024
FLUSH_NODES = 2048
READ_PIECE = 1024 * 1024  # what `open_read` yields at a time
# FileReader._equal: seeks in a file before its blocks are checked for equal sizes, the most
# blocks a file may have for that (512 MiB: a 70 ms scan, what ~1,200 seeks save), and how many
# files a drive remembers the answer for.
EQUAL_AFTER_SEEKS = 32
EQUAL_SCAN_BLOCKS = 8192
EQUAL_BLOCKS_KEPT = 4096
# Seconds a read waits for peers to send a block of a file it needs, then fails (ETIMEDOUT in a
# mount): a peer that has gone must not hang a reader (a mount's, which Ctrl-C cannot stop).
PEER_TIMEOUT = 30.0
# A path, or a function that names one once the drive's lock is held (a mount's inode, which a
# rename may move while the change waits for the lock).
PathSource = str | Callable[[], str]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms_from_ns(ns: int) -> int:
    """A time in ns since the epoch as the format holds it (Stat.mtime/ctime, uint64 ms): whole
    ms, and a time before the epoch as the epoch itself, as the kernel clamps a time outside
    what a file system can hold."""
    return max(ns, 0) // 1_000_000


@dataclass(slots=True)
class Stat:
    """A file's, folder's, symlink's or special entry's attributes (the `Stat` message, times
    in ms).

    `nlink` and `ino` are not stored (`ino` is the node's log index). Folders are encoded as
    hyperdrive 9 writes them: no size or blocks, and uid/gid only when set.
    """

    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    blocks: int = 0
    offset: int = 0
    byte_offset: int = 0
    mtime: int = 0
    ctime: int = 0
    linkname: str = ""
    metadata: dict[str, bytes] = field(default_factory=dict)
    nlink: int = 1
    ino: int = 0

    def is_file(self) -> bool:
        return stat_mod.S_ISREG(self.mode)

    def same_content(self, other: Stat) -> bool:
        """Do both point at the same bytes (whatever their other attributes)?"""
        return self._content() == other._content()

    def _content(self) -> tuple[int, int, int, int]:
        return self.size, self.blocks, self.offset, self.byte_offset

    def is_dir(self) -> bool:
        return stat_mod.S_ISDIR(self.mode)

    def is_symlink(self) -> bool:
        return stat_mod.S_ISLNK(self.mode)

    def is_special(self) -> bool:
        """A FIFO, socket or device node: an entry without content. (A mode with no type bits
        counts as a file's, as `kind` says.)"""
        return stat_mod.S_IFMT(self.mode) in _CONTENTLESS

    def kind(self) -> str:
        """What the entry is, in words ("file" for a mode without a type)."""
        return _KINDS.get(stat_mod.S_IFMT(self.mode), "file")

    def encode(self) -> bytes:
        """The protobuf `Stat`; InvalidArgumentError for a value its field cannot hold (a
        negative time, a uid past 32 bits)."""
        try:
            return self._message().SerializeToString()
        except ValueError as err:  # protobuf's range check, on assignment
            raise InvalidArgumentError(f"attributes out of range: {err}") from None

    def _message(self) -> schema_pb2.Stat:
        msg = schema_pb2.Stat(mode=self.mode)
        if self.is_dir():
            if self.uid:
                msg.uid = self.uid
            if self.gid:
                msg.gid = self.gid
        else:
            msg.uid, msg.gid, msg.size, msg.blocks = self.uid, self.gid, self.size, self.blocks
        msg.offset = self.offset
        msg.byteOffset = self.byte_offset
        msg.mtime = self.mtime
        msg.ctime = self.ctime
        if self.linkname:
            msg.linkname = self.linkname
        for key, value in self.metadata.items():
            msg.metadata[key] = value
        return msg

    @classmethod
    def decode(cls, data: bytes, ino: int = 0) -> Stat:
        msg = schema_pb2.Stat()
        try:
            msg.ParseFromString(data)
        except (DecodeError, UnicodeDecodeError) as err:
            raise DecodingError(f"metadata entry {ino} holds no valid Stat: {err}") from None
        mode = msg.mode
        return cls(
            mode=mode,
            uid=msg.uid,
            gid=msg.gid,
            size=msg.size,
            blocks=msg.blocks,
            offset=msg.offset,
            byte_offset=msg.byteOffset,
            mtime=msg.mtime,
            ctime=msg.ctime,
            linkname=msg.linkname,
            metadata=dict(msg.metadata),
            nlink=2 if stat_mod.S_ISDIR(mode) else 1,
            ino=ino,
        )


def _implicit_dir(tree: AppendTree, names: Names) -> Stat:
    """What a folder that only exists through the files in it looks like: hyperdrive 9's
    default folder, with the times of the newest entry below it (not 1970; 1970 when that
    entry or its Stat is corrupt, which is that entry's error, not the folder's)."""
    st = Stat(mode=stat_mod.S_IFDIR | DEFAULT_DIR_MODE)
    newest = next(reversed(tree.listing(names).entries.values()), None)
    if newest is not None:
        with suppress(DecodingError):
            if (value := tree.node(newest).value) is not None:
                st.mtime = st.ctime = Stat.decode(value, newest).mtime
    return st


async def _open_core(store: Corestore, **how: Any) -> Hypercore:
    core = await store.get(**how)
    await core.ready()
    return core


class Drive:
    """A Hyperdrive. Create with `await Drive.create(store, name=…)` or `await Drive.open(store, key)`."""

    def __init__(
        self, store: Corestore, metadata: Hypercore, content: Hypercore, checkout: int | None = None
    ) -> None:
        self.store = store
        self.metadata = metadata
        self.content = content
        self._checkout = checkout
        self.peer_timeout = PEER_TIMEOUT  # for reads of blocks not stored here; 0 = no limit
        self._ahead = ReadAhead(content)  # its readers' read-ahead, for blocks not stored here
        self._equal_blocks: dict[tuple[int, int, int], bool] = {}  # see FileReader._equal
        self._lock = trio.Lock()
        self._pending_content: list[bytes] = []
        self._pending_bytes = 0
        self._pending_nodes: list[bytes] = []
        self._batching = 0
        self._queued = trio.Event()  # set when a batch holds back what it gathered
        self._append_failure: BaseException | None = None  # a grouped append that failed, unreported
        self._appending_nodes = 0  # our metadata appends in flight: the tree is ahead of the log
        # Folder -> (its listing, how many folders it holds); folder -> child seq -> is a folder.
        # Both within bounds, as the tree's caches are (a drive's every folder would not fit).
        self._subfolders: WeightedCache[Names, tuple[Listing, int]] = WeightedCache(
            FOLDER_CACHE_BYTES, lambda known: listing_weight(known[0])
        )
        self._folder_entries: WeightedCache[Names, dict[int, bool]] = WeightedCache(
            FOLDER_CACHE_BYTES, lambda known: _FOLDER_ENTRIES_OVERHEAD + _FOLDER_ENTRY * len(known)
        )
        length = metadata.length if checkout is None else checkout
        self.tree = AppendTree(self._read_node_block, length, 1, writable=checkout is None and metadata.writable)

    # --- opening ----------------------------------------------------------------------------------

    @classmethod
    async def create(cls, store: Corestore, name: str = "default") -> Drive:
        """The store's drive called `name`: made (metadata and content cores, Index) on first use."""
        metadata = await _open_core(store, name=f"hyperdrive/{name}/metadata")
        if metadata.length == 0:
            content = await _open_core(store, name=f"hyperdrive/{name}/content")
            index = schema_pb2.Index(type="hyperdrive", content=content.key)
            await metadata.append(index.SerializeToString())
            return cls(store, metadata, content)
        return await cls._from_index(store, metadata)

    @classmethod
    async def open(cls, store: Corestore, key: bytes) -> Drive:
        """The drive whose metadata core has public key `key` (writable if the store holds its keys)."""
        metadata = await _open_core(store, key=key)
        return await cls._from_index(store, metadata)

    @classmethod
    async def _from_index(cls, store: Corestore, metadata: Hypercore) -> Drive:
        wait = metadata.replicator is not None
        try:
            block = await metadata.get(0, wait=wait)
        except BlockNotAvailableError:
            raise FileNotFoundInDrive(f"drive {metadata.id}: not in this store (no index block)") from None
        index = schema_pb2.Index()
        try:
            index.ParseFromString(block)
        except DecodeError:
            index.type = ""
        if index.type != "hyperdrive" or len(index.content) != 32:
            raise DecodingError(f"core {metadata.id} is not a hyperdrive (block 0 is no Index)")
        if index.content == metadata.key:
            # Its files' bytes would be read from, and written into, its own log of Nodes.
            raise DecodingError(f"drive {metadata.id} names its own metadata core as its content core")
        content = await _open_core(store, key=index.content)
        await _complete_metadata(metadata, metadata.length)
        return cls(store, metadata, content)

    # --- properties -------------------------------------------------------------------------------

    @property
    def key(self) -> bytes:
        return self.metadata.key

    @property
    def discovery_key(self) -> bytes:
        return self.metadata.discovery_key

    @property
    def id(self) -> str:
        return self.metadata.id

    @property
    def writable(self) -> bool:
        return self._checkout is None and self.metadata.writable and self.content.writable

    @property
    def version(self) -> int:
        """The metadata length this drive shows (pending batch entries included)."""
        return self.tree.length

    # --- the tree ---------------------------------------------------------------------------------

    def _read_node_block(self, seq: int) -> bytes:
        # Metadata is replicated whole (hyperdrive 9 default); `_refresh` downloads it first, so a
        # point read here is local and cheap enough to run inline.
        block = self.metadata.read_block_sync(seq)
        if block is None:
            raise BlockNotAvailableError(f"metadata block {seq} of drive {self.id} is not stored here")
        return block

    async def _refresh(self) -> AppendTree:
        """The tree at the metadata head, following appends (or a truncation) by others. Of a
        drive replicated from peers, the head is the longest run of the log held here: a peer's
        signed length runs ahead of its blocks, and a request must not wait for them (a peer
        gone meanwhile would hang every request of a mount); `wait_version` fetches them."""
        if self._checkout is not None or self._pending_nodes or self._appending_nodes:
            return self.tree
        metadata = self.metadata
        length = metadata.contiguous_length if _from_peers(metadata) else metadata.length
        if length != self.tree.length:
            nodes = self.tree.nodes if length > self.tree.length else None
            if nodes is None:
                self._folder_entries.clear()  # a truncated log reuses seqs for other nodes
            self.tree = AppendTree(self._read_node_block, length, 1, nodes, writable=self.writable)
        return self.tree

    async def _lstat_names(self, names: Names) -> Stat:
        tree = await self._refresh()
        node = tree.get(names) if names else None
        if node is not None:
            st = Stat.decode(node.value, node.seq)
        elif not names or tree.list(names):
            st = _implicit_dir(tree, names)
        else:
            raise FileNotFoundInDrive(f"{join(names)}: no such file or folder")
        if st.is_dir():
            st.nlink = 2 + self._subfolder_count(tree, names)
        return st

    def _subfolder_count(self, tree: AppendTree, names: Names) -> int:
        """How many folders folder `names` holds (its `..` links, as ext4 counts them), from its
        listing: a child whose newest entry lies below it is a folder, one whose newest entry is
        its own node is one if that node says so. Counted once per listing, and carried across
        puts and deletions in the folder (`_carry_subfolder_counts`), so a new or removed file
        in a big folder costs O(1), not a step per sibling."""
        listing = tree.listing(names)
        cached = self._subfolders.get(names)
        if cached is not None and cached[0] is listing:
            return cached[1]
        seqs = [seq for key, seq in listing.entries.items() if isinstance(key, str) and holdable(key)]
        if len(self._folder_entries.get(names) or ()) > 2 * len(seqs) + 64:
            self._folder_entries.pop(names)  # drop entries long replaced
        count = sum(self._is_folder_entry(tree, names, seq) for seq in seqs)
        known = self._folder_entries.get(names)
        if known is not None:
            self._folder_entries.put(names, known)  # weighed again, grown by the count
        self._subfolders.put(names, (listing, count))
        return count

    def _is_folder_entry(self, tree: AppendTree, names: Names, seq: int) -> bool:
        """Is entry `seq` of folder `names`' listing a folder? (each seq is decoded once; one
        whose Stat is corrupt counts as none, so only its own lookup fails)"""
        known = self._folder_entries.get(names)
        if known is None:
            known = {}
            self._folder_entries.put(names, known)
        found = known.get(seq)
        if found is None:
            node = tree.node(seq)
            try:
                found = len(node.names) > len(names) + 1 or (node.value is not None and _is_dir_value(node.value, seq))
            except DecodingError:
                found = False
            known[seq] = found
        return found

    # --- reading ----------------------------------------------------------------------------------

    async def lstat(self, path: str) -> Stat:
        """The attributes of `path` itself (a symlink is not followed)."""
        return await self._lstat_names(normalize(path))

    async def stat(self, path: str) -> Stat:
        """The attributes of `path`, following symlinks."""
        names, st = await self._resolve(normalize(path))
        return st

    async def _resolve(self, names: Names) -> tuple[Names, Stat]:
        for _ in range(MAX_SYMLINKS):
            st = await self._lstat_names(names)
            if not st.is_symlink():
                return names, st
            target = st.linkname
            base = "" if target.startswith("/") else join(names[:-1])
            names = _resolve_dots(f"{base}/{target}")
        raise InvalidPathError(f"{join(names)}: too many levels of symbolic links")

    async def exists(self, path: str) -> bool:
        try:
            await self.lstat(path)
        except FileNotFoundInDrive:
            return False
        return True

    async def readdir(self, path: str = "/") -> list[str]:
        """The names in folder `path` (in log order), but for any no path can name (`holdable`)."""
        names = normalize(path)
        tree = await self._refresh()
        node = tree.get(names)
        if node is not None and not _is_dir_value(node.value, node.seq):
            raise NotADirectoryInDrive(f"{join(names)} is not a folder")
        children = tree.list(names)
        if children is None:
            if names and node is None:
                raise FileNotFoundInDrive(f"{join(names)}: no such folder")
            return []
        lost = [key.seq for key in tree.listing(names).entries if isinstance(key, Unreadable)]
        if lost:  # said where someone reads it (a mount's log, a command's stderr)
            message = "%s: left out metadata blocks %s, which its index names but are no hyperdrive nodes"
            log.warning(message, join(names) or "/", lost)
        return [name for name in children if holdable(name)]

    async def read_file(self, path: str) -> bytes:
        return b"".join([chunk async for chunk in self.open_read(path)])

    async def open_read(self, path: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes [start, end) of file `path` in pieces of up to READ_PIECE bytes, reading
        only the blocks they lie in."""
        reader = await self.open_reader(path)
        stop = reader.size if end is None else min(end, reader.size)
        if start < 0:
            return
        for offset in range(start, stop, READ_PIECE):
            yield await reader.read(offset, min(READ_PIECE, stop - offset))

    async def open_reader(self, path: str) -> FileReader:
        """Reads anywhere in file `path` as it is now (see `FileReader`)."""
        st = await self._file_stat(path)
        stored = await self.content.has(st.offset, st.offset + st.blocks)
        return FileReader(self.content, st, stored, self._ahead, self.peer_timeout, self._equal_blocks)

    async def _file_stat(self, path: str) -> Stat:
        """The Stat of file `path` (symlinks followed), once its content blocks can be read."""
        names, st = await self._resolve(normalize(path))
        if st.is_dir():
            raise IsADirectoryInDrive(f"{join(names)} is a folder")
        if st.is_special():
            raise InvalidArgumentError(f"{join(names)} is a {st.kind()}, not a file")
        last = st.offset + st.blocks
        if last > self.content.length:
            # Queued, or being appended by a batch right now (which holds the lock).
            await self.flush_pending()
        if last > self.content.length and self.content.replicator is None:
            # No peer can bring those blocks: waiting for them would hang the reader.
            raise DecodingError(f"{join(names)} points past the end of the content core")
        return st

    async def readlink(self, path: str) -> str:
        st = await self.lstat(path)
        if not st.is_symlink():
            raise InvalidArgumentError(f"{path} is not a symbolic link")
        return st.linkname

    async def get_metadata(self, path: str) -> dict[str, bytes]:
        """The extended attributes of `path`."""
        return dict((await self.lstat(path)).metadata)

    # --- history ----------------------------------------------------------------------------------

    async def checkout(self, version: int) -> Drive:
        """A read-only drive showing the metadata log's first `version` entries."""
        drive = Drive(self.store, self.metadata, self.content, checkout=version)
        drive.tree = await self._tree_at(version)
        drive.peer_timeout = self.peer_timeout
        return drive

    async def _tree_at(self, version: int) -> AppendTree:
        tree = await self._refresh()
        if not 1 <= version <= tree.length:
            raise InvalidArgumentError(f"version {version} is outside 1..{tree.length}")
        return tree.checkout(version)

    async def history(self, start: int = 0, end: int | None = None) -> list[Change]:
        """Every put and del in the log, oldest first."""
        return list((await self._refresh()).history(start, end))

    async def diff(self, other_version: int) -> list[Change]:
        """What changed from `other_version` to this drive's version: puts are entries of this
        version, dels entries of the other one that this version replaced or removed."""
        return (await self._tree_at(other_version)).diff(self.tree)

    async def wait_version(self, after: int) -> int:
        """Wait until the drive has a version after `after` (its entries fetched from peers, for
        a drive replicated from them); returns the new version."""
        while True:
            while self.metadata.length <= after:
                await self.metadata.wait_append()
            await _complete_metadata(self.metadata, self.metadata.length)
            version = (await self._refresh()).length
            if version > after:
                return version

    # --- writing ----------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if not self.writable:
            raise ReadOnlyDriveError(f"drive {self.id} is read-only here")
        # A change a batch gathers is acknowledged before it is stored: on a full disk it must
        # fail now, not vanish with the batch.
        self.store.check_room()

    def check_room(self, size: int) -> None:
        """StorageFullError unless `size` more bytes fit on the store's disk. For a file made
        longer without its bytes (a truncate, a write past the end): its zeros are stored like
        any bytes, and would otherwise fill the disk before the append fails."""
        self.store.check_room(size)

    async def _writable_names(self, path: str) -> Names:
        """`path` normalised, checked writable and not the root; its parent must not be a file."""
        self._check_writable()
        names = normalize(path)
        if not names:
            raise InvalidPathError("the root folder cannot be written as a file")
        tree = await self._refresh()
        for depth in range(1, len(names)):
            node = tree.get(names[:depth])
            if node is not None and not _is_dir_value(node.value, node.seq):
                raise NotADirectoryInDrive(f"{join(names[:depth])} is not a folder")
        return names

    def _content_position(self) -> tuple[int, int]:
        """Where the next content block lands: (block index, byte offset)."""
        return self.content.length + len(self._pending_content), self.content.byte_length + self._pending_bytes

    def _queue_content(self, data: bytes) -> None:
        self._pending_content.append(data)
        self._pending_bytes += len(data)

    def _queue_put(self, names: Names, value: bytes) -> None:
        before = self._counts_on_the_way(names)
        self._pending_nodes.append(self.tree.put(names, value))
        self._carry_subfolder_counts(names, before)

    def _queue_del(self, names: Names) -> None:
        before = self._counts_on_the_way(names)
        self._pending_nodes.append(self.tree.delete(names))
        self._carry_subfolder_counts(names, before)

    def _counts_on_the_way(self, names: Names) -> list[tuple[int, int | None] | None]:
        """For each folder on the way to `names` whose subfolder count is known for its current
        listing: (that count, its entry for the next name). The change spends the listings."""
        tree, known = self.tree, self._subfolders
        out: list[tuple[int, int | None] | None] = []
        for depth in range(len(names)):
            folder = names[:depth]
            cached = known.get(folder)
            listing = tree.listing(folder)
            out.append((cached[1], listing.entries.get(names[depth])) if cached and cached[0] is listing else None)
        return out

    def _carry_subfolder_counts(self, names: Names, before: list[tuple[int, int | None] | None]) -> None:
        """After a put or deletion of `names`, each folder on the way whose count was known
        `before` gets it for its new listing, in which only the entry for `names[depth]`
        changed."""
        tree = self.tree
        for depth, known in enumerate(before):
            if known is None:
                continue
            folder = names[:depth]
            new = tree.listing(folder)
            if not new.entries:  # below where a deletion's levels end: the folder is gone
                self._subfolders.pop(folder)
                continue
            count, was = known
            now = new.entries.get(names[depth])
            count -= was is not None and self._is_folder_entry(tree, folder, was)
            count += now is not None and self._is_folder_entry(tree, folder, now)
            self._subfolders.put(folder, (new, count))

    async def _commit(self) -> None:
        """Append what waits, unless a batch gathers it and it is still small. Hold `_lock`."""
        if self._batching and self._pending_bytes < FLUSH_BYTES and len(self._pending_nodes) < FLUSH_NODES:
            self._queued.set()
            return
        await self._append_pending()

    async def _append_pending(self, logged: bool = True) -> None:
        """Append the queued content and the queued nodes in one commit (a Node is never stored
        without its content). `logged=False` (a streaming writer's bulk content) appends the
        content without the write-ahead log; nodes always go in it, and a logged write first
        makes every unlogged one durable (`Hypercore.append`)."""
        content, nodes = self._pending_content, self._pending_nodes
        self._pending_content, self._pending_nodes, self._pending_bytes = [], [], 0
        # Until the nodes are in the log, a lookup meanwhile must not take the log's shorter
        # length for a change by others (rebuilding the tree and its listings from scratch).
        self._appending_nodes += bool(nodes)
        try:
            appends = [(core, blocks) for core, blocks in ((self.content, content), (self.metadata, nodes)) if blocks]
            if appends:
                # Shielded: what it took from the queue is nowhere else (a mount's grouped
                # appender is cancelled at unmount, maybe right in here).
                with trio.CancelScope(shield=True):
                    await append_together(appends, logged=logged or bool(nodes))
                self.tree.nodes.stored(self.metadata.length)  # the log has them: they may go
        except BaseException:
            # The tree already counts the lost entries: derive it again from the log.
            self.tree = AppendTree(self._read_node_block, self.metadata.length, 1, writable=self.tree.writable)
            self._folder_entries.clear()  # the lost entries' seqs will name other nodes
            raise
        finally:
            self._appending_nodes -= bool(nodes)

    async def flush_pending(self) -> None:
        """Append everything a batch or writer has gathered so far."""
        async with held(self._lock):
            await self._append_pending()

    async def flush(self) -> None:
        """Append what waits and make the store durable (fsync of the write-ahead log). Raises
        StorageError, once, if a grouped append failed since the last flush."""
        await self.flush_pending()
        await trio.to_thread.run_sync(self.store.flush)
        failure, self._append_failure = self._append_failure, None
        if failure is not None:
            raise StorageError(f"drive {self.id}: changes made before this flush were lost: {failure!r}") from failure

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[Drive]:
        """Gather writes into few appends (one signature for many nodes); appended on exit."""
        self._batching += 1
        try:
            yield self
        finally:
            self._batching -= 1
            if not self._batching:
                await self.flush_pending()

    @asynccontextmanager
    async def grouped(self, delay: float) -> AsyncIterator[Drive]:
        """A batch for a long-lived writer (a mount): what it gathers is appended at most `delay`
        seconds after it is queued, or sooner when it grows big or on `flush()`. Files closed in
        quick succession (an untar) share one signature and one store write instead of paying
        for each; a crash loses at most the last `delay` seconds, as a page cache would. A
        failed append is logged and raised by the next `flush()` (an fsync), as ext4 reports a
        failed writeback."""
        async with self.batch(), trio.open_nursery() as nursery:
            nursery.start_soon(self._append_when_queued, delay)
            yield self
            nursery.cancel_scope.cancel()

    async def _append_when_queued(self, delay: float) -> None:
        while True:
            await self._queued.wait()
            await trio.sleep(delay)
            self._queued = trio.Event()
            try:
                await self.flush_pending()
            except Exception as err:  # noqa: BLE001 - the writer learns of it at its next flush
                log.exception("appending to drive %s failed; what was queued is lost", self.id)
                self._append_failure = err

    async def write_file(
        self,
        path: str,
        data: bytes,
        mode: int | None = None,
        uid: int = 0,
        gid: int = 0,
        mtime: int | None = None,
        ctime: int | None = None,
    ) -> Stat:
        """Write file `path` with `data` (mode: permission bits; times in ms, default now)."""
        writer = await self.open_write(path, mode=mode, uid=uid, gid=gid, mtime=mtime, ctime=ctime)
        await writer.write(data)
        return await writer.close()

    async def open_write(
        self,
        path: str,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: int | None = None,
        ctime: int | None = None,
    ) -> FileWriter:
        """A streaming writer for file `path`: content is appended as it comes, the `Node` on
        `close()`. Attributes not given are kept from an existing file (else hyperdrive 9's)."""
        names = await self._writable_names(path)
        node = self.tree.get(names)
        old = Stat.decode(node.value, node.seq) if node is not None else None
        if old is not None and old.is_dir():
            raise IsADirectoryInDrive(f"{join(names)} is a folder")
        if old is not None and not old.is_file():
            old = None  # a symlink is replaced by a file
        offset, byte_offset = self._content_position()
        now = now_ms()
        st = Stat(
            mode=stat_mod.S_IFREG | (mode if mode is not None else old.mode & 0o7777 if old else DEFAULT_FILE_MODE),
            uid=uid if uid is not None else old.uid if old else 0,
            gid=gid if gid is not None else old.gid if old else 0,
            offset=offset,
            byte_offset=byte_offset,
            mtime=mtime if mtime is not None else now,
            ctime=ctime if ctime is not None else now,
            metadata=dict(old.metadata) if old else {},
        )
        return FileWriter(self, names, st)

    async def open_append(self, path: str, st: Stat, **attrs: int | None) -> FileWriter:
        """A writer that goes on after the content of file `path` as Stat `st` has it: what it
        takes is appended as the blocks after `st`'s, not with them again (a log appended to
        and fsynced a line at a time stays one write per line). Its `close` puts the Node only
        while `path` still has `st`'s content (else FileChangedError: write it whole)."""
        writer = await self.open_write(path, **attrs)
        writer.go_on_after(st)
        return writer

    async def mkdir(
        self,
        path: str,
        mode: int = DEFAULT_DIR_MODE,
        uid: int = 0,
        gid: int = 0,
        mtime: int | None = None,
        ctime: int | None = None,
    ) -> None:
        """Make folder `path` (FileExistsInDrive if something is there)."""
        await self._create(path, stat_mod.S_IFDIR | mode, uid=uid, gid=gid, mtime=mtime, ctime=ctime)

    async def symlink(
        self, target: str, path: str, uid: int = 0, gid: int = 0, mtime: int | None = None
    ) -> None:
        """Make `path` a symbolic link to `target` (stored as `Stat.linkname`)."""
        if not target or "\0" in target:
            raise InvalidPathError(f"bad symlink target {target!r}")
        await self._create(
            path, stat_mod.S_IFLNK | SYMLINK_MODE, uid=uid, gid=gid, mtime=mtime, ctime=mtime, linkname=target
        )

    async def mknod(
        self, path: str, mode: int, uid: int = 0, gid: int = 0, mtime: int | None = None
    ) -> None:
        """Make `path` a FIFO or a socket (`mode`: its type and permission bits, as for
        `os.mknod`); NotSupportedError for any other type."""
        if stat_mod.S_IFMT(mode) not in SPECIAL_TYPES:
            raise NotSupportedError(f"{path}: a drive holds files, folders, symlinks, FIFOs and sockets, no device nodes")
        await self._create(path, stat_mod.S_IFMT(mode) | (mode & 0o7777), uid=uid, gid=gid, mtime=mtime, ctime=mtime)

    async def _create(
        self, path: str, mode: int, mtime: int | None = None, ctime: int | None = None, **fields: Any
    ) -> None:
        """Append the `Node` of a new folder, symlink or special entry (its offsets: where
        content is now)."""
        names = await self._writable_names(path)
        now = now_ms()
        async with held(self._lock):  # checks under the lock, as in `_update`
            if await self.exists(path):
                raise FileExistsInDrive(f"{join(names)} exists")
            offset, byte_offset = self._content_position()
            st = Stat(
                mode=mode,
                offset=offset,
                byte_offset=byte_offset,
                mtime=now if mtime is None else mtime,
                ctime=now if ctime is None else ctime,
                **fields,
            )
            self._queue_put(names, st.encode())
            await self._commit()

    async def unlink(self, path: str) -> None:
        """Remove file or symlink `path`, or an entry whose Stat is corrupt: nothing else
        mends one, since nothing can read it (a mount's lookup of it is EIO). A folder's own
        corrupt node goes alone: the folder stays, as the entries in it imply it."""
        names = await self._writable_names(path)
        async with held(self._lock):
            try:
                is_dir = (await self._lstat_names(names)).is_dir()
            except DecodingError:
                if self.tree.get(names) is None:
                    raise
                is_dir = False  # its own Stat does not decode
            if is_dir:
                raise IsADirectoryInDrive(f"{join(names)} is a folder")
            self._queue_del(names)
            await self._commit()

    async def rmdir(self, path: str) -> None:
        """Remove the empty folder `path`."""
        names = await self._writable_names(path)
        async with held(self._lock):
            if not (await self._lstat_names(names)).is_dir():
                raise NotADirectoryInDrive(f"{join(names)} is not a folder")
            if self.tree.list(names):
                raise DirectoryNotEmptyError(f"{join(names)} is not empty")
            self._queue_del(names)
            await self._commit()

    async def rename(self, old: str, new: str, moved: Callable[[], None] | None = None) -> None:
        """Move `old` (file, symlink or folder) to `new`; new nodes point at the same content.
        `moved` is called the moment the tree shows the move (a mount moves its inodes then)."""
        src = await self._writable_names(old)
        dst = await self._writable_names(new)
        # Checked and moved under the lock: a Node a writer put meanwhile is checked and moves too.
        async with held(self._lock):
            src_st = await self._lstat_names(src)
            if src == dst:
                return
            if dst[: len(src)] == src:
                raise InvalidPathError(f"cannot move {join(src)} into itself")
            try:
                dst_st: Stat | None = await self._lstat_names(dst)
            except FileNotFoundInDrive:
                dst_st = None
            if dst_st is not None:
                if src_st.is_dir() and not dst_st.is_dir():
                    raise NotADirectoryInDrive(f"{join(dst)} is not a folder")
                if not src_st.is_dir() and dst_st.is_dir():
                    raise IsADirectoryInDrive(f"{join(dst)} is a folder")
                if dst_st.is_dir() and self.tree.list(dst):
                    raise DirectoryNotEmptyError(f"{join(dst)} is not empty")
            moves = self._entries(src, src_st)
            for names, node in moves:
                self._queue_put(dst + names[len(src) :], node.value)
            for names, _ in reversed(moves):
                self._queue_del(names)
            if moved is not None:
                moved()
            await self._commit()

    async def exchange(self, a: str, b: str, moved: Callable[[], None] | None = None) -> None:
        """Swap `a` and `b`, files, symlinks or folders of either kind, in one append (what
        renameat2's RENAME_EXCHANGE asks of a file system). `moved`: as for `rename`."""
        x, y = await self._writable_names(a), await self._writable_names(b)
        async with held(self._lock):  # checked and swapped under the lock, as in `rename`
            x_st, y_st = await self._lstat_names(x), await self._lstat_names(y)
            if x == y:
                return
            if x[: len(y)] == y or y[: len(x)] == x:
                raise InvalidPathError(f"cannot swap {join(x)} and {join(y)}: one is inside the other")
            xs, ys = self._entries(x, x_st), self._entries(y, y_st)
            after = {y + names[len(x) :]: node.value for names, node in xs}
            after.update((x + names[len(y) :], node.value) for names, node in ys)
            # The entries no name keeps go first, children before parents, so that no entry is
            # ever put below a file (the tree would drop a folder emptied that way from its
            # parent's listing, file and all); one append holds it all, so no reader sees the
            # way between.
            for names, _ in reversed(xs + ys):
                if names not in after:
                    self._queue_del(names)
            for names, value in after.items():
                self._queue_put(names, value)
            if moved is not None:
                moved()
            await self._commit()

    def _entries(self, top: Names, st: Stat) -> list[tuple[Names, Node]]:
        """The live nodes of `top` (whose Stat is `st`) and, for a folder, of everything under
        it, parents before children (an implicit folder has no node of its own)."""
        if st.is_dir():
            return self._subtree(top)
        node = self.tree.get(top)
        if node is None:
            raise FileNotFoundInDrive(f"{join(top)}: no such file or folder")
        return [(top, node)]

    def _subtree(self, top: Names) -> list[tuple[Names, Node]]:
        """Every live node at or below folder `top`, parents before children."""
        out: list[tuple[Names, Node]] = []
        stack = [top]
        while stack:
            names = stack.pop()
            node = self.tree.get(names)
            if node is not None:
                out.append((names, node))
            stack.extend(names + (name,) for name in reversed(self.tree.list(names) or []))
        return out

    async def _update(self, path: PathSource, change: Callable[[Stat], Stat | None]) -> None:
        """Append a new `Node` for `path` with `change(stat)` (an implicit folder gets its first),
        unless that is None (nothing to change)."""
        async with held(self._lock):
            # Named and read under the lock: a Node a writer put while this waited for it is the
            # one changed, and a rename meanwhile has moved what a callable `path` names.
            names = await self._writable_names(path() if callable(path) else path)
            new = change(await self._lstat_names(names))
            if new is not None:
                self._queue_put(names, new.encode())
                await self._commit()

    async def set_attributes(
        self,
        path: PathSource,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: int | None = None,
    ) -> None:
        """Give `path` the permission bits, owner and mtime (ms) given, in one Node with ctime
        now; none if it has them all already. `path` may be a function naming it once the
        drive's lock is held (a mount's inode, which a rename may move meanwhile)."""

        def change(st: Stat) -> Stat | None:
            new = _with_attributes(st, mode, uid, gid, mtime)
            return None if new == st else replace(new, ctime=now_ms())

        await self._update(path, change)

    async def chmod(self, path: PathSource, mode: int) -> None:
        await self.set_attributes(path, mode=mode)

    async def chown(self, path: PathSource, uid: int, gid: int) -> None:
        await self.set_attributes(path, uid=uid, gid=gid)

    async def utimes(self, path: PathSource, atime: int | None, mtime: int) -> None:
        """Set the modification time (ms); the format has no atime, so `atime` is ignored."""
        await self.set_attributes(path, mtime=mtime)

    async def set_metadata(self, path: PathSource, key: str, value: bytes | None) -> None:
        """Set extended attribute `key` of `path` (None removes it; `path` as in
        `set_attributes`)."""
        if not key or "\0" in key:
            raise InvalidArgumentError(f"bad attribute name {key!r}")

        def change(st: Stat) -> Stat | None:
            metadata = dict(st.metadata)
            if value is None:
                metadata.pop(key, None)
            else:
                metadata[key] = bytes(value)
            return None if metadata == st.metadata else replace(st, metadata=metadata, ctime=now_ms())

        await self._update(path, change)

    async def truncate(self, path: str, size: int) -> None:
        """Cut or zero-extend file `path` (symlinks followed) to `size` bytes (attributes kept,
        mtime now)."""
        if size < 0:
            raise InvalidArgumentError(f"cannot truncate to a negative size {size}")
        while True:
            names, st = await self._resolve(normalize(path))
            if st.is_dir():
                raise IsADirectoryInDrive(f"{join(names)} is a folder")
            if st.size == size:
                return
            self.check_room(size - st.size)
            try:
                await self._rewrite(join(names), st, size)
                return
            except FileChangedError:
                continue  # another writer's content came first: cut that instead

    async def _rewrite(self, path: str, st: Stat, size: int) -> None:
        """Write file `path`, whose content is `st`'s, again cut or zero-extended to `size`.
        The kept bytes are written again: a Node pointing at a prefix of the old blocks would
        show old readers (which read whole blocks) the cut bytes."""
        writer = await self.open_write(path, mtime=now_ms())
        try:
            async for chunk in self.open_read(path, 0, size):
                await writer.write(chunk)
            missing = size - st.size
            while missing > 0:
                await writer.write(bytes(min(missing, BLOCK_SIZE)))
                missing -= BLOCK_SIZE
        except BaseException:
            writer.abort()
            raise
        await writer.close(replaces=st)

    async def close(self) -> None:
        """Append what waits and close the drive's cores."""
        if self.writable and (self._pending_nodes or self._pending_content):
            await self.flush_pending()
        if self._checkout is None:
            await self.content.close()
            await self.metadata.close()


class FileReader:
    """Reads anywhere in one file, as it was when opened. A read that starts where the last one
    ended goes on from the block that one stopped in; any other seeks the content core first.
    While every block of the file is stored here (`stored`), reads run in order on one worker
    thread, which goes straight on to the next read asked for meanwhile (`SerialThread`).
    Reads tell the drive's `ReadAhead`, which asks peers for the blocks they will want next."""

    def __init__(
        self,
        content: Hypercore,
        st: Stat,
        stored: bool,
        ahead: ReadAhead,
        peer_timeout: float = 0,
        equal_blocks: dict[tuple[int, int, int], bool] | None = None,
    ) -> None:
        self._content, self._stat, self._ahead = content, st, ahead
        self._peer_timeout = peer_timeout  # seconds a block not stored here is waited for
        self._end = st.offset + st.blocks
        # Blocks of BLOCK_SIZE, as every file a drive writes has: a seek can guess the block.
        self._regular = st.blocks == _blocks_for(st.size)
        self._equal_blocks = {} if equal_blocks is None else equal_blocks
        self._equal_key = (content.fork, st.offset, st.blocks)
        self._seeks = 0
        self._next = (0, st.offset, 0)  # (file offset, block, offset in it) the last read ended at
        self._thread = SerialThread() if stored else None

    @property
    def size(self) -> int:
        return self._stat.size

    async def read(self, offset: int, size: int, alone: bool = False) -> bytes:
        """Up to `size` bytes at `offset`, fewer only at the end of the file. `alone`: nothing
        else waits for the event loop (a mount serving this one request), so a read of a block
        or two, stored here, where no tree walk is needed runs on the loop itself: two store
        reads, cheaper than a hand-off to the worker thread and back."""
        size = min(size, self._stat.size - offset)
        if offset < 0 or size <= 0:
            return b""
        blocks = (self._stat.offset, self._end)
        place = self._place(offset)
        if place is not None:  # stored or not: a run of files read in order goes on through both
            self._ahead.reading(place[0], _blocks_for(place[1] + size), True, blocks)
        if self._thread is not None:
            short = alone and size <= BLOCK_SIZE and (place is not None or self._regular and not self._scan_due())
            try:
                return await self._thread.run(self._read_here, offset, size, inline=short)
            except BlockNotAvailableError:
                self._thread = None  # cleared meanwhile: wait for replication from now on
        timeout = self._peer_timeout
        index, skip = place or await self._content.seek(*self._seek(offset), timeout)
        if place is None:
            self._ahead.reading(index, _blocks_for(skip + size), False, blocks)
        fetched = await self._content.read_bytes(index, skip, size, self._end, timeout)
        return self._ended(offset, size, *fetched)

    def _read_here(self, offset: int, size: int) -> bytes:
        """`read` of stored blocks, in the worker thread."""
        index, skip = self._place(offset) or self._located(offset)
        return self._ended(offset, size, *self._content.read_bytes_sync(index, skip, size, self._end))

    def _located(self, offset: int) -> tuple[int, int]:
        """(block, offset in it) of file offset `offset`, of blocks stored here (blocking)."""
        if self._equal():
            return self._stat.offset + offset // BLOCK_SIZE, offset % BLOCK_SIZE
        return self._content.seek_sync(*self._seek(offset))

    def _equal(self) -> bool:
        """Are the file's blocks all BLOCK_SIZE bytes but the last? Then a byte's block is
        arithmetic, where a seek reads a dozen tree nodes (~60 us of a 230 us random read, the
        lower ones not cached yet). Their count alone does not say: another writer's blocks may
        differ in size. A scan of the file's tree leaves does (blocking; ~70 ms for 512 MiB),
        made once per file and drive, for a reader that has sought EQUAL_AFTER_SEEKS times in a
        file of at most EQUAL_SCAN_BLOCKS: a player's or `tail`'s few seeks never wait for it."""
        equal = self._equal_blocks.get(self._equal_key)
        if equal is None:
            due = self._scan_due()
            self._seeks += 1
            if not (due and self._regular):
                return False
            equal = self._content.blocks_sized_sync(self._stat.offset, self._end - 1, BLOCK_SIZE)
            if len(self._equal_blocks) >= EQUAL_BLOCKS_KEPT:
                self._equal_blocks.clear()
            self._equal_blocks[self._equal_key] = equal
        return equal

    def _scan_due(self) -> bool:
        """Would the next seek scan the file's tree leaves, were its blocks' count regular
        (`_equal`)? That one is not made on the event loop."""
        return (
            self._equal_key not in self._equal_blocks
            and self._seeks + 1 >= EQUAL_AFTER_SEEKS
            and self._stat.blocks <= EQUAL_SCAN_BLOCKS
        )

    def _place(self, offset: int) -> tuple[int, int] | None:
        """(block, offset in it) of file offset `offset`, if the last read ended there."""
        at, index, skip = self._next
        return (index, skip) if offset == at else None

    def _seek(self, offset: int) -> tuple[int, int | None]:
        """Where a seek to file offset `offset` looks: the content core's byte offset, and the
        block it is in if the file has BLOCK_SIZE blocks, as every file a drive writes has
        (the seek checks that guess, and walks the tree only when it is wrong). A file with
        another count of blocks (another writer's) gets no guess: in a sparse core, checking
        one fetches the block."""
        st = self._stat
        return st.byte_offset + offset, st.offset + offset // BLOCK_SIZE if self._regular else None

    def _ended(self, offset: int, size: int, data: bytes, index: int, skip: int) -> bytes:
        if len(data) < size:
            # Its blocks end before its size: handing back fewer bytes would read as the end of
            # the file (or, through a mount, as zeros up to its size).
            st = self._stat
            raise DecodingError(f"metadata entry {st.ino}: the file's blocks end before its size, {st.size}")
        self._next = (offset + len(data), index, skip)
        return data


class FileWriter:
    """Streams one file into the content core: whole blocks are appended in batches as they come,
    the `Node` on `close()`. The drive stays usable meanwhile (the write lock is held only inside
    each call). A file's blocks must be one run, so when another writer appended in between, the
    blocks written so far are read back and appended again after the others' (only then is
    anything written twice)."""

    def __init__(self, drive: Drive, names: Names, st: Stat) -> None:
        self._drive = drive
        self._names = names
        self._stat = st
        self._buffer = bytearray()  # the tail that does not fill a block yet
        self._size = 0
        self._blocks = 0
        self._next = 0  # where this file's next block must land to keep its run contiguous
        self._open = True
        self._after: Stat | None = None  # the content this writer goes on after (`go_on_after`)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._open:
            raise InvalidArgumentError(f"{join(self._names)}: write after close")
        view = memoryview(data).cast("B")
        self._size += len(view)
        blocks: list[bytes] = []
        if self._buffer:
            take = BLOCK_SIZE - len(self._buffer)
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) < BLOCK_SIZE:
                return
            blocks.append(bytes(self._buffer))
            self._buffer.clear()
        whole = len(view) - len(view) % BLOCK_SIZE
        # One copy per block, straight from the caller's buffer.
        blocks.extend(bytes(view[i : i + BLOCK_SIZE]) for i in range(0, whole, BLOCK_SIZE))
        self._buffer += view[whole:]
        if blocks:
            drive = self._drive
            async with held(drive._lock):
                await self._queue(blocks)
                if drive._pending_bytes >= FLUSH_BYTES:
                    # Durable with the file's Node at close (or the next logged write).
                    await drive._append_pending(logged=False)

    async def _queue(self, blocks: list[bytes]) -> None:
        """Queue this file's next blocks right after its earlier ones. Hold the drive's lock."""
        drive = self._drive
        position, byte_position = drive._content_position()
        if not self._blocks:
            self._stat.offset, self._stat.byte_offset = position, byte_position
        elif position != self._next:
            await self._move_run()
        for block in blocks:
            drive._queue_content(block)
        self._blocks += len(blocks)
        self._next = self._stat.offset + self._blocks

    async def _move_run(self) -> None:
        """Append this file's blocks so far again at the end of the content core (another writer
        appended after them), so the file stays one run."""
        drive = self._drive
        await drive._append_pending()
        first = self._stat.offset
        self._stat.offset, self._stat.byte_offset = drive._content_position()
        async for block in drive.content.read_stream(first, first + self._blocks):
            drive._queue_content(block)
            if drive._pending_bytes >= FLUSH_BYTES:
                await drive._append_pending()

    def go_on_after(self, st: Stat) -> None:
        """Take the blocks of `st`, a file's content in the drive, as this writer's first (see
        `Drive.open_append`). Before anything is written."""
        if st.blocks:
            self._stat.offset, self._stat.byte_offset = st.offset, st.byte_offset
            self._blocks, self._size, self._next = st.blocks, st.size, st.offset + st.blocks
        self._after = st

    @property
    def size(self) -> int:
        """The bytes this writer has taken so far."""
        return self._size

    async def read(self, start: int, size: int) -> bytes:
        """Up to `size` bytes from `start` of what this writer has taken so far (a mount reads a
        streamed file back from here while it is still being written). Not of a writer that
        goes on after a file's content: its blocks need not be BLOCK_SIZE."""
        if self._after is not None:
            raise InvalidArgumentError(f"{join(self._names)}: a writer going on after a file is not read back")
        stop = min(start + size, self._size)
        if start >= stop:
            return b""
        drive = self._drive
        whole = self._blocks * BLOCK_SIZE  # in the content core, or queued for it
        parts = []
        if start < whole:
            async with held(drive._lock):
                if drive._pending_content:
                    await drive._append_pending(logged=False)
            first, skip = divmod(start, BLOCK_SIZE)
            end = self._stat.offset + _blocks_for(min(stop, whole))
            data, _, _ = await drive.content.read_bytes(self._stat.offset + first, skip, min(stop, whole) - start, end)
            parts.append(data)
        if stop > whole:
            parts.append(bytes(self._buffer[max(start, whole) - whole : stop - whole]))
        return b"".join(parts)

    async def close(
        self,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime: int | None = None,
        path: Callable[[], str] | None = None,
        replaces: Stat | None = None,
    ) -> Stat:
        """Append the rest and the file's `Node` (with the attributes given, changed since the
        writer opened); returns its Stat. `path`, called once the drive's lock is held, names
        where the Node goes when that may have moved since the writer opened (a mount's file
        whose folder was renamed meanwhile: the rename and this put are then one after the
        other, never interleaved). With `replaces`, the Stat whose content this writer rewrote,
        the Node is put only if the file still has that content then (else FileChangedError)."""
        if not self._open:
            raise InvalidArgumentError(f"{join(self._names)}: closed twice")
        self._open = False
        drive = self._drive
        st = self._stat
        replaces = replaces or self._after
        async with held(drive._lock):
            if path is not None:
                self._names = normalize(path())
            node = (await drive._refresh()).get(self._names)
            now = Stat.decode(node.value, node.seq) if node is not None else None
            if replaces is not None and (now is None or not now.same_content(replaces)):
                raise FileChangedError(f"{join(self._names)} changed while it was rewritten")
            tail = [bytes(self._buffer)] if self._buffer else []
            if tail or not self._blocks:
                await self._queue(tail)
            # Attributes set on the file since the writer opened (a chmod, an xattr) stay.
            if now is not None and now.is_file():
                st.mode, st.uid, st.gid, st.metadata = now.mode, now.uid, now.gid, dict(now.metadata)
            st = replace(_with_attributes(st, mode, uid, gid, mtime), size=self._size, blocks=self._blocks)
            drive._queue_put(self._names, st.encode())
            await drive._commit()
        return st

    def abort(self) -> None:
        """Give up: nothing more is written for this file (blocks already appended stay unused)."""
        self._open = False

    async def __aenter__(self) -> FileWriter:
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            await self.close()
        else:
            self.abort()


def _with_attributes(st: Stat, mode: int | None, uid: int | None, gid: int | None, mtime: int | None) -> Stat:
    """`st` with the permission bits, owner and mtime given (None keeps its own)."""
    return replace(
        st,
        mode=st.mode if mode is None else stat_mod.S_IFMT(st.mode) | (mode & 0o7777),
        uid=st.uid if uid is None else uid,
        gid=st.gid if gid is None else gid,
        mtime=st.mtime if mtime is None else mtime,
    )


def _is_dir_value(value: bytes, seq: int) -> bool:
    """Whether an encoded `Stat` is a folder's, from its leading mode field when it comes first
    (as hyperdrive and we write it), without decoding the rest."""
    if value[:1] == b"\x08":
        mode = shift = 0
        for byte in value[1:6]:
            mode |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return stat_mod.S_ISDIR(mode)
    return Stat.decode(value, seq).is_dir()


def _blocks_for(size: int) -> int:
    """The blocks `size` bytes take in a file a drive wrote (about, in another writer's)."""
    return -(-size // BLOCK_SIZE)


async def _complete_metadata(metadata: Hypercore, length: int) -> None:
    """Fetch the metadata log's first `length` blocks when a peer can bring them (hyperdrive 9
    replicates metadata whole), so every lookup in the tree is a local read."""
    if _from_peers(metadata) and not await metadata.has(0, length):
        await metadata.download(0, length)


def _from_peers(metadata: Hypercore) -> bool:
    """Whether the drive's log comes from peers (a replicated drive we do not write)."""
    return metadata.replicator is not None and not metadata.writable


def _resolve_dots(path: str) -> Names:
    """A symlink target joined to its folder, with '.' and '..' folded (never above the root)."""
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
        else:
            out.append(part)
    return normalize("/" + "/".join(out))
