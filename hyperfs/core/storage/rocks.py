"""The RocksDB edge: opening the database, atomic commits, point reads, range scans, snapshots.

One `Rocks` per store folder (`<folder>/db`, column family `corestore` as in hypercore-storage).
A commit is one `WriteBatch` written to the WAL before it returns (no fsync: a SIGKILL loses
nothing committed; `flush(sync=True)` fsyncs the WAL for an `fsync` from the mount).

A commit may skip the WAL (`logged=False`, for bulk data written while it streams in: the WAL
write is most of what storing a block costs, and rocksdict holds the GIL through it). Such a
commit is durable only once the memtables holding it are on disk, so the next logged commit,
`flush()` and `close()` write them out first: a crash loses the unlogged commits since the last
of those and nothing after them, so what survives is always a prefix of the commits.
On a nearly full disk (under `reserve` bytes free) every commit is logged: an unlogged one
stuck in the memtables when the disk fills would keep the store from taking writes again
(`_recover`).

Read-only opens RocksDB as a secondary instance: it reads the store as it was when opened, and
may do so while another process writes it (a mount), whose compactions delete files a plain
read-only open could still be reading.

Snapshots are RocksDB snapshots for point reads. rocksdict 0.3's snapshot iterators ignore the
snapshot, so a `SnapshotReader` scans a range as: the keys live now, plus every key deleted
since the snapshot was taken (recorded at commit time, under the commit lock), each read back
through the snapshot.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator

import rocksdict

from hyperfs.errors import NotWritableError, SessionClosedError, StorageError, StorageFullError

Change = tuple[bytes, bytes | None, bytes | None]
"""(key, value, None) puts, (key, None, None) deletes, (start, None, end) deletes [start, end)."""

COLUMN_FAMILY = "corestore"

_MiB = 1 << 20
_REOPEN_ROOM = 4 * _MiB  # free space, beyond the WAL's size, before a full store is reopened
_STALL_POLL = 0.001  # seconds between looks at whether RocksDB still holds writes back
# Free space under which commits are all logged: room to write out the two memtables (the
# unlogged commits they may hold) with a margin for the WAL and for other writers of the disk.
RESERVE = 128 * _MiB


def _column_options() -> rocksdict.Options:
    """Options for a store of many 4-64 KiB blocks plus small metadata values."""
    opts = rocksdict.Options(raw_mode=True)
    # Blocks stay inline in the SST files, unlike hypercore-storage's blob files (min 4 KiB):
    # measured here, a cold read of 64 KiB blocks from blob files costs 3x the CPU of one from
    # SSTs and flushing them twice as much (rocksdict's RocksDB has no hardware CRC32C, which
    # blob records are checked with; SST blocks use XXH3). Blob values a JS store wrote still read.
    # Memtables are most of a mount's memory, and when flushes are slower than the writer (a
    # busy disk) every one of them fills: three of 32 MiB put a 512 MiB copy into a mount at
    # 216-222 MB resident, two at 181 (three of 24 MiB: 188-193), copying as fast (120-145
    # MiB/s either way on a noisy host). scripts/bench_core.py measured two as fast as three
    # too (4 KiB x 64 appends: 17-18.5k blocks/s both; earlier, on a quieter host, two stalled
    # them). One 32 MiB memtable takes writes while the other flushes.
    opts.set_write_buffer_size(32 * _MiB)
    opts.set_max_write_buffer_number(2)
    # Universal (size-tiered) compaction: every append batch writes a core's head and bitfield
    # beside its blocks, so each flushed file spans the core's whole key range, and leveled
    # compaction merged each one with every file of that core below: writing 4 x 512 MiB into
    # one drive wrote 0.5, 0.8, 0.9 and 1.7 GiB of compaction output, growing with the drive.
    # Universal merges sorted runs by size, so a byte is rewritten about log(size) times.
    opts.set_compaction_style(rocksdict.DBCompactionStyle.universal())
    # Merging starts at 32 sorted runs, not RocksDB's 4: a 512 MiB copy into a mount writes 16
    # flushes, so two copies in a row write no merge while they run (disk writes 513 MiB a copy,
    # not 880-920), and a byte is rewritten about log32 rather than log4 times. A merge running
    # beside a copy shares the disk and the CPU with its flushes, which then take 2-3x as long
    # and stop the writer (every memtable waiting): at 16 runs (and three memtables), the second
    # copy into a fresh mount met the merge of the first and ran at 107-133 MiB/s against
    # 156-173 for the first; at 32, 160. Five copies in a row: 156 160 118 110 109 MiB/s (at 16:
    # 168 107 114 93 93). The slowdown and stop thresholds move up with it (RocksDB's 20 and
    # 36), so the runs a copy flushes while a merge runs never throttle it.
    opts.set_level_zero_file_num_compaction_trigger(32)
    opts.set_level_zero_slowdown_writes_trigger(80)
    opts.set_level_zero_stop_writes_trigger(96)
    opts.set_target_file_size_base(64 * _MiB)
    # Block data is hashes and (often already compressed or encrypted) user bytes.
    opts.set_compression_type(rocksdict.DBCompressionType.none())
    table = rocksdict.BlockBasedOptions()
    table.set_block_size(8192)
    table.set_block_cache(rocksdict.Cache(16 * _MiB))
    table.set_cache_index_and_filter_blocks(True)
    # Every sorted run spans a core's whole key range (see the compaction above), so a point
    # read would search each run's index and may read a data block of a run without the key;
    # a whole-key filter (10 bits a key, ~1% false positives) answers "not here" from memory.
    table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    return opts


def _db_options() -> rocksdict.Options:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_max_background_jobs(2)
    opts.set_max_total_wal_size(256 * _MiB)
    # Sequential reads of a file's blocks are sequential in the SST files: the kernel's
    # read-ahead (off under RocksDB's default POSIX_FADV_RANDOM) makes a cold read 3-4x faster.
    opts.set_advise_random_on_open(False)
    # Flushes and compactions write through the page cache, asking the kernel to start writing
    # back each MiB as it goes (so the fsync that ends each file waits for little). Direct I/O
    # saved a copy (a 512 MiB copy into a mount: 5.3 -> 4.0 s CPU), but wrote one 1 MiB buffer
    # at a time and waited for each: a 32 MiB flush took 145-230 ms, the writer stopped on full
    # memtables, and a copy ran at the disk's pace. Through the page cache, bench_mount (2 runs
    # each, same host): cp 156-157 MiB/s against 134-138, 128 KiB copy 158-159 against 116-132,
    # cold read 480-587 against 327-338, peak RSS 171-184 MB against 184-186.
    opts.set_bytes_per_sync(_MiB)
    return opts


def _reader_options() -> rocksdict.Options:
    """A secondary's options: it logs a line or two at every catch-up (a follower's come with its
    writer's changes, up to 20 a second), so its info log is kept small."""
    opts = _db_options()
    opts.set_max_log_file_size(_MiB)
    opts.set_keep_log_file_num(2)
    return opts


def _reader_folder(db_path: str) -> str:
    """A new folder for a secondary's own files, under the store's `readers/` (named by pid):
    the folders of readers that died without closing (a SIGKILL) go first. Elsewhere in the
    system's temporary folder if the store's folder takes no writes from us."""
    readers = os.path.join(os.path.dirname(os.path.abspath(db_path)), "readers")
    try:
        os.makedirs(readers, exist_ok=True)
        for entry in os.scandir(readers):
            pid = entry.name.partition("-")[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(entry.path, ignore_errors=True)
        return tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=readers)
    except OSError:
        return tempfile.mkdtemp(prefix="hyperfs-reader-")


def storage_error(action: str, err: Exception) -> StorageError:
    """What a failed RocksDB call raises: StorageFullError (ENOSPC) when the disk is full, so
    the mount and the CLI say so, else StorageError. rocksdict gives the status only as text."""
    if "No space left on device" in str(err):
        return StorageFullError(f"{action}: {err} (free space and try again; if it still fails, open the store again)")
    return StorageError(f"{action}: {err}")


def _is_not_found(err: Exception) -> bool:
    return type(err) is Exception and err.args == ("key not found",)


class Rocks:
    """An open RocksDB: reads, scans, atomic commits, snapshots."""

    def __init__(self, path: str, *, read_only: bool = False, reserve: int = RESERVE) -> None:
        if read_only and not os.path.exists(os.path.join(path, "CURRENT")):
            raise StorageError(f"no store at {path} to read")
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.read_only = read_only
        self.reserve = reserve
        self._secondary: str | None = None  # a read-only store's own folder (RocksDB's logs)
        self._open_db()  # sets `_full`
        self._write_options = rocksdict.WriteOptions()  # WAL on, no per-write fsync
        self._unlogged_options = rocksdict.WriteOptions()
        self._unlogged_options.disable_wal = True
        for options in (self._write_options, self._unlogged_options):
            options.no_slowdown = True  # see `_write`
        self.unlogged = False  # an unlogged commit waits in the memtables
        self._lock = threading.Lock()
        self._snapshots: weakref.WeakSet[SnapshotReader] = weakref.WeakSet()
        self._cursors: weakref.WeakSet[_Cursor] = weakref.WeakSet()
        self.closed = False
        self.live = LiveReader(self)

    def _open_db(self) -> None:
        access = rocksdict.AccessType.read_write()
        if self.read_only:
            # A secondary keeps its own log files apart from the writer's.
            self._secondary = self._secondary or _reader_folder(self.path)
            access = rocksdict.AccessType.secondary(self._secondary)
            self._writer = self._manifest()
        try:
            # RocksDB opens only with every existing column family named (a JS store may have more).
            existing = rocksdict.Rdict.list_cf(self.path) if os.path.exists(os.path.join(self.path, "CURRENT")) else []
            families = {name: _column_options() for name in {COLUMN_FAMILY, *existing} - {"default"}}
            options = _reader_options() if self.read_only else _db_options()
            self._db = rocksdict.Rdict(self.path, options, column_families=families, access_type=access)
        except Exception as err:  # rocksdict raises bare Exception for every RocksDB status
            if self.read_only:
                shutil.rmtree(self._secondary, ignore_errors=True)
                self._secondary = None
            raise storage_error(f"cannot open RocksDB at {self.path}", err) from None
        self._cf = self._db.get_column_family(COLUMN_FAMILY)
        self._handle = self._db.get_column_family_handle(COLUMN_FAMILY)
        self._full = False  # the disk filled up: RocksDB refuses writes until opened again

    def _failed(self, action: str, err: Exception) -> StorageError:
        """The error a failed RocksDB call raises, remembering a full disk (see `_recover`)."""
        error = storage_error(action, err)
        self._full = self._full or isinstance(error, StorageFullError)
        return error

    def _recover(self) -> None:
        """Once the disk filled up, RocksDB refuses every write until it is opened again
        (rocksdict has no `Resume()`), even after space is freed. Open it again when that loses
        nothing: no commit waits unlogged in the memtables (each acknowledged one is in the
        WAL, which the reopen replays), no snapshot or scan holds the old handle, and the disk
        has room for the replay (the WAL's size). Otherwise the writes keep failing with
        StorageFullError until the store is closed and opened. Hold `_lock`."""
        if not self._full or self.unlogged or self._snapshots or self._cursors:
            return
        wal = sum(e.stat().st_size for e in os.scandir(self.path) if e.name.endswith(".log"))
        disk = os.statvfs(self.path)
        if disk.f_bavail * disk.f_frsize < wal + _REOPEN_ROOM:
            return
        self._reopen()

    def _reopen(self) -> None:
        """Close the database and open it again. Hold `_lock`, with no snapshot or scan open."""
        self._cf = self._handle = None
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except Exception:  # noqa: BLE001 - a full disk is reported again; the files are let go
                pass
        # A reopen that fails leaves no database: each later call tries again (`_column`).
        self._open_db()

    def check_room(self, size: int = 0) -> None:
        """Raise StorageFullError if a write would be refused now: the disk filled up and the
        database could not be opened again yet (see `_recover`), or `size` more bytes would eat
        into the reserve. For work that is acknowledged before it is committed, so it fails up
        front instead of vanishing later, and for work that would fill the disk before failing
        (zeros written for a file made longer by millions of blocks)."""
        if self._full:
            with self._lock:
                self._recover()
                if self._full:
                    raise StorageFullError(f"storage at {self.path}: the disk is full (free space and try again)")
        if size > 0:
            disk = os.statvfs(self.path)
            room = disk.f_bavail * disk.f_frsize - self.reserve
            if size > room:
                raise StorageFullError(
                    f"storage at {self.path}: {size} more bytes do not fit (room for {max(room, 0)})"
                )

    def _check_open(self) -> None:
        self._column()

    def _column(self) -> rocksdict.Rdict:
        """The open column family, opening the database again if a reopen failed (`_recover`);
        a reader that raced a reopen waits for it here instead of finding no database."""
        if self.closed:
            raise SessionClosedError(f"storage at {self.path} is closed")
        cf = self._cf
        if cf is None:
            with self._lock:
                if self._db is None:
                    self._open_db()
                cf = self._cf
        return cf

    def commit(self, changes: Iterable[Change], *, logged: bool = True) -> None:
        """Write `changes` in order as one atomic WriteBatch (in the WAL when this returns, or
        with `logged=False` in the memtables only, durable with the next logged commit)."""
        self._check_open()
        if self.read_only:
            raise NotWritableError(f"storage at {self.path} is open read-only")
        changes = list(changes)
        if not logged and self._low_on_space():
            logged = True  # see RESERVE
        with self._lock:
            self._recover()
            if self._snapshots:
                self._record_deletes(changes, list(self._snapshots))
            if logged:
                # What this commit may depend on must not be lost while it survives.
                self._persist_unlogged()
            self._write(changes, self._write_options if logged else self._unlogged_options)
            self.unlogged = self.unlogged or not logged

    def _write(self, changes: list[Change], options: rocksdict.WriteOptions) -> None:
        """Write `changes` as one batch. When the memtables are full, RocksDB holds a write
        back until one is flushed (~0.1 s for 32 MiB), and rocksdict keeps the GIL meanwhile:
        every thread of the process stopped, a mount's event loop and hashing with it. So
        writes are made with `no_slowdown`, which refuses them instead, and a refused one is
        made again once the stall is over, waited out here in sleeps, which let go of the GIL.
        Hold `_lock`."""
        refused = 0
        while True:
            batch = self._batch(changes)  # rocksdict spends a batch even on a refused write
            try:
                self._db.write(batch, options)
            except Exception as err:
                stalled = "Write stall" in str(err)
                failure: StorageError | None = None if stalled else self._failed("RocksDB write failed", err)
            else:
                return
            finally:
                # A traceback keeps its frames' locals, and a batch holds the database open (`_recover`).
                del batch
            if failure is not None:
                raise failure from None
            refused += 1
            # A write slowed down rather than stopped (rare here) is refused again at once: wait longer.
            time.sleep(_STALL_POLL * min(refused, 16))
            while self._db.property_int_value("rocksdb.is-write-stopped"):
                time.sleep(_STALL_POLL)

    def _low_on_space(self) -> bool:
        disk = os.statvfs(self.path)
        return disk.f_bavail * disk.f_frsize < self.reserve

    def _batch(self, changes: list[Change]) -> rocksdict.WriteBatch:
        batch = rocksdict.WriteBatch(raw_mode=True)
        handle = self._handle
        for key, value, end in changes:
            if end is not None:
                batch.delete_range(key, end, handle)
            elif value is not None:
                batch.put(key, value, handle)
            else:
                batch.delete(key, handle)
        return batch

    def _record_deletes(self, changes: list[Change], snapshots: list[SnapshotReader]) -> None:
        deleted: set[bytes] = set()
        for key, value, end in changes:
            if end is not None:
                deleted.update(k for k, _ in self.live.scan(key, end, keys_only=True))
            elif value is None:
                deleted.add(key)
        for snap in snapshots:
            snap.deleted |= deleted

    def snapshot(self) -> SnapshotReader:
        """A consistent read-only view of the database as it is now."""
        self._check_open()
        with self._lock:
            snap = SnapshotReader(self, self._cf.snapshot())
            self._snapshots.add(snap)
        return snap

    def catch_up(self) -> None:
        """Read-only: see what the process writing the store has committed since (logged, or
        written out of its memtables)."""
        self._check_open()
        if not self.read_only:
            raise NotWritableError("only a read-only store catches up with another writer")
        with self._lock:
            if self._db is None or (self._manifest() != self._writer and not (self._snapshots or self._cursors)):
                # Another process opened the store since (each open starts a manifest).
                # RocksDB's catch-up would keep the memtables it replayed from the earlier
                # writer's log, which then hide what the later one stored under the same keys
                # (a core's head); opened again, it reads the store as it is.
                self._reopen()
                return
            try:
                self._db.try_catch_up_with_primary()
            except Exception as err:  # rocksdict raises bare Exception for every RocksDB status
                raise storage_error("catching up with the store's writer", err) from None

    def _manifest(self) -> str | None:
        """The manifest the store's writer last opened (RocksDB's CURRENT file)."""
        try:
            with open(os.path.join(self.path, "CURRENT")) as f:
                return f.read().strip()
        except OSError:
            return None

    def flush(self, sync: bool = True) -> None:
        """Make every commit durable: unlogged ones by writing the memtables out, logged ones by
        flushing the WAL buffer and, with `sync`, fsyncing it (what an `fsync` of a mounted file
        needs)."""
        self._check_open()
        with self._lock:
            self._recover()
            self._persist_unlogged()
            try:
                self._db.flush_wal(sync)
            except Exception as err:
                raise self._failed("RocksDB WAL flush failed", err) from None

    def _persist_unlogged(self) -> None:
        """Write the memtables to disk if an unlogged commit waits in them. Hold `_lock`."""
        if self.unlogged:
            try:
                self._cf.flush(True)  # rocksdict lets go of the GIL meanwhile
            except Exception as err:
                raise self._failed("RocksDB flush failed", err) from None
            self.unlogged = False

    def close(self) -> None:
        """Close the database, first writing out unlogged commits; if that fails (a full disk),
        the database is closed all the same and the failure raised (those commits are lost)."""
        if self.closed:
            return
        try:
            with self._lock:
                self._persist_unlogged()
        finally:
            self.closed = True
            # Every rocksdict object holding the database must go, or its file lock stays taken.
            for snap in list(self._snapshots):
                snap._snapshot = None
            for cursor in list(self._cursors):
                cursor.it = None
            self._snapshots.clear()
            self._cursors.clear()
            self.live = None  # type: ignore[assignment]
            self._cf = self._handle = None
            db, self._db = self._db, None
            try:
                if db is not None:
                    db.close()
            except Exception as err:
                # After a failed write RocksDB reports it again here; nothing more is lost.
                if not self._full:
                    raise storage_error("RocksDB close failed", err) from None
            finally:
                if self.read_only:
                    shutil.rmtree(self._secondary, ignore_errors=True)


class LiveReader:
    """Reads the database as it is now."""

    snapshotted = False

    def __init__(self, rocks: Rocks) -> None:
        self._rocks = rocks

    def acquire(self) -> None:
        """Nothing to hold: the live database stays open until the store closes."""

    def release(self) -> None:
        """Nothing to let go (see `acquire`)."""

    def get(self, key: bytes) -> bytes | None:
        return self._rocks._column().get(key)

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return self._rocks._column().get(keys) if keys else []

    def scan(
        self, start: bytes, end: bytes, reverse: bool = False, keys_only: bool = False
    ) -> Iterator[tuple[bytes, bytes | None]]:
        """(key, value) for keys in [start, end), ascending or descending."""
        column = self._rocks._column()
        read = rocksdict.ReadOptions()
        read.set_iterate_upper_bound(end)  # lets RocksDB stop at range tombstones early
        cursor = _Cursor(column.iter(read))
        del column  # no local may hold the database across a yield (see below)
        self._rocks._cursors.add(cursor)
        # The bounds are checked here too: rocksdict does not apply every ReadOptions bound.
        if reverse:
            cursor.it.seek_for_prev(end)
            if cursor.it.valid() and cursor.it.key() >= end:
                cursor.it.prev()
        else:
            cursor.it.seek(start)
        # No local may hold the iterator across a yield: close() must be able to drop it.
        while True:
            if cursor.it is None:
                raise SessionClosedError(f"storage at {self._rocks.path} was closed during a scan")
            if not cursor.it.valid():
                return
            key = cursor.it.key()
            if key >= end if not reverse else key < start:
                return
            yield key, None if keys_only else cursor.it.value()
            if cursor.it is not None:
                cursor.it.prev() if reverse else cursor.it.next()


class _Cursor:
    """An open RocksDB iterator that `Rocks.close()` can take away (it holds the file lock)."""

    __slots__ = ("it", "__weakref__")

    def __init__(self, it: rocksdict.RdictIter) -> None:
        self.it: rocksdict.RdictIter | None = it


class SnapshotReader:
    """Reads the database as it was when the snapshot was taken."""

    snapshotted = True

    def __init__(self, rocks: Rocks, snapshot: rocksdict.Snapshot) -> None:
        self._rocks = rocks
        self._snapshot: rocksdict.Snapshot | None = snapshot
        self._users = 0
        self.deleted: set[bytes] = set()

    def acquire(self) -> None:
        """One more storage reads through this snapshot."""
        self._users += 1

    def release(self) -> None:
        """A storage closed; the last one lets RocksDB drop the snapshot (and what only it pins)."""
        self._users -= 1
        if self._users <= 0:
            self._snapshot = None
            self.deleted = set()
            self._rocks._snapshots.discard(self)

    def get(self, key: bytes) -> bytes | None:
        self._rocks._check_open()
        if self._snapshot is None:
            raise SessionClosedError("storage snapshot was released")
        try:
            return self._snapshot[key]
        except Exception as err:
            if _is_not_found(err):
                return None
            raise storage_error("RocksDB snapshot read failed", err) from None

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def scan(
        self, start: bytes, end: bytes, reverse: bool = False, keys_only: bool = False
    ) -> Iterator[tuple[bytes, bytes | None]]:
        candidates = {k for k, _ in self._rocks.live.scan(start, end, keys_only=True)}
        candidates.update(k for k in self.deleted if start <= k < end)
        for key in sorted(candidates, reverse=reverse):
            value = self.get(key)
            if value is not None:
                yield key, value
