"""`CorestoreStorage`: one RocksDB per store folder holding many cores (JS `CorestoreStorage`).

The store head allocates core and data pointers; cores are found by discovery key or alias.
`Atom` batches writes to several cores into one commit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator

from hyperfs.core.manifest import Manifest
from hyperfs.core.storage import keys, schema, streams
from hyperfs.core.storage.batch import CorePointers, CoreReadBatch, CoreWriteBatch
from hyperfs.core.storage.core import HypercoreStorage
from hyperfs.core.storage.rocks import Change, Rocks
from hyperfs.core.storage.schema import (
    STORE_VERSION,
    Alias,
    Auth,
    CoreRecord,
    KeyPair,
    StoreHead,
    decode_value,
)
from hyperfs.core.storage.view import View
from hyperfs.errors import InvalidArgumentError, NotWritableError

_EMPTY = View()  # store-level reads see no pending changes


class Atom:
    """Writes to several cores that commit together: one WriteBatch at `flush()`."""

    def __init__(self, rocks: Rocks) -> None:
        self._rocks = rocks
        self.view = View()
        self.flushing = False
        self._on_flush: list[Callable[[], object]] = []

    def on_flush(self, fn: Callable[[], object]) -> None:
        """Call `fn` after each flush (a core updating its in-memory state, say)."""
        self._on_flush.append(fn)

    def flush(self) -> None:
        """Commit every pending change of the atom atomically, then run the flush callbacks."""
        if self.flushing:
            raise InvalidArgumentError("atom is already flushing")
        self.flushing = True
        try:
            if self.view.changes:
                self._rocks.commit(self.view.changes)
            self.view.reset()
            for fn in list(self._on_flush):
                fn()
        finally:
            self.flushing = False


class CorestoreStorage:
    """A store folder: its RocksDB (`<path>/db`), store head, cores, aliases."""

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self.rocks = Rocks(os.path.join(path, "db"), read_only=read_only)
        self._lock = threading.RLock()  # head read-modify-write (pointer allocation, seed)

    # --- store head -----------------------------------------------------------------------------

    def _get_head(self) -> StoreHead | None:
        data = self.rocks.live.get(keys.store_head())
        return None if data is None else decode_value("store head", schema.decode_store_head, data)

    def _head_change(self, head: StoreHead) -> Change:
        if self.read_only:
            raise NotWritableError(f"store {self.path} is open read-only")
        head.version = STORE_VERSION
        return (keys.store_head(), schema.encode_store_head(head), None)

    def _alloc_data(self) -> int:
        """A fresh data pointer (committed at once: it is only a counter)."""
        with self._lock:
            head = self._get_head() or StoreHead()
            pointer = head.allocated.datas
            head.allocated.datas += 1
            self.rocks.commit([self._head_change(head)])
        return pointer

    def get_seed(self) -> bytes | None:
        head = self._get_head()
        return None if head is None else head.seed

    def _set_head_field(self, name: str, value: bytes, overwrite: bool) -> bytes:
        with self._lock:
            head = self._get_head() or StoreHead()
            if getattr(head, name) is None or overwrite:
                setattr(head, name, bytes(value))
            self.rocks.commit([self._head_change(head)])
            return getattr(head, name)

    def set_seed(self, seed: bytes, *, overwrite: bool = True) -> bytes:
        """Store the corestore primary key; returns the one now stored."""
        return self._set_head_field("seed", keys.fixed32(seed, "seed"), overwrite)

    def get_default_discovery_key(self) -> bytes | None:
        head = self._get_head()
        return None if head is None else head.default_discovery_key

    def set_default_discovery_key(self, discovery_key: bytes, *, overwrite: bool = True) -> bytes:
        """Set the core `resume()` opens without a key; returns the one now stored."""
        key = keys.fixed32(discovery_key, "discovery key")
        return self._set_head_field("default_discovery_key", key, overwrite)

    # --- cores --------------------------------------------------------------------------------

    def _get_core_record(self, discovery_key: bytes) -> CoreRecord | None:
        data = self.rocks.live.get(keys.store_core(discovery_key))
        if data is None:
            return None
        what = f"core record of {discovery_key.hex()}"
        return decode_value(what, schema.decode_core_record, data)

    def has(self, discovery_key: bytes) -> bool:
        return self._get_core_record(discovery_key) is not None

    def get_auth(self, discovery_key: bytes) -> Auth | None:
        record = self._get_core_record(discovery_key)
        if record is None:
            return None
        return CoreReadBatch(CorePointers(record.core_pointer, record.data_pointer), self.rocks.live, _EMPTY).get_auth()

    def get_alias(self, alias: Alias) -> bytes | None:
        """The discovery key stored under `alias`."""
        return self.rocks.live.get(keys.store_core_by_alias(alias.namespace, alias.name))

    def _resume_from_record(self, record: CoreRecord) -> HypercoreStorage:
        deps = []
        data_pointer = record.data_pointer
        seen = {data_pointer}
        while True:
            ptr = CorePointers(record.core_pointer, data_pointer)
            dep = CoreReadBatch(ptr, self.rocks.live, _EMPTY).get_dependency()
            if dep is None or dep.data_pointer in seen:  # a loop would only come from corruption
                break
            deps.append(dep)
            seen.add(dep.data_pointer)
            data_pointer = dep.data_pointer
        core = CorePointers(record.core_pointer, record.data_pointer, tuple(deps))
        return HypercoreStorage(self, self.rocks.live, core, None, None)

    def resume(self, discovery_key: bytes | None = None) -> HypercoreStorage | None:
        """Open a stored core (the default core without a key); None if there is none."""
        if discovery_key is None:
            discovery_key = self.get_default_discovery_key()
            if discovery_key is None:
                return None
        record = self._get_core_record(keys.fixed32(discovery_key, "discovery key"))
        return None if record is None else self._resume_from_record(record)

    def create(
        self,
        *,
        key: bytes,
        discovery_key: bytes,
        manifest: Manifest | None = None,
        key_pair: KeyPair | None = None,
        encryption_key: bytes | None = None,
        alias: Alias | None = None,
        user_data: Iterable[tuple[str, bytes]] = (),
    ) -> HypercoreStorage:
        """Create a core (auth, alias, user data in one commit), or resume it if it exists."""
        keys.fixed32(key, "core key")
        keys.fixed32(discovery_key, "discovery key")
        if key_pair is not None:
            keys.fixed32(key_pair.public_key, "public key")
        with self._lock:
            record = self._get_core_record(discovery_key)
            if record is not None:
                return self._resume_from_record(record)
            head = self._get_head() or StoreHead()
            if head.default_discovery_key is None:
                head.default_discovery_key = bytes(discovery_key)
            record = CoreRecord(STORE_VERSION, head.allocated.cores, head.allocated.datas, alias)
            head.allocated.cores += 1
            head.allocated.datas += 1
            changes = [
                self._head_change(head),
                (keys.store_core(discovery_key), schema.encode_core_record(record), None),
            ]
            if alias is not None:
                changes.append((keys.store_core_by_alias(alias.namespace, alias.name), bytes(discovery_key), None))
            ptr = CorePointers(record.core_pointer, record.data_pointer)
            tx = CoreWriteBatch(ptr, self.rocks, None, changes=changes)
            tx.set_auth(Auth(bytes(key), bytes(discovery_key), manifest, key_pair, encryption_key))
            for name, value in user_data:
                tx.put_user_data(name, value)
            tx.flush()
            return HypercoreStorage(self, self.rocks.live, tx.core, None, None)

    def delete_core(self, discovery_key: bytes) -> None:
        """Delete a core: its record, auth, sessions and every data pointer of it."""
        record = self._get_core_record(keys.fixed32(discovery_key, "discovery key"))
        if record is None:
            return
        ptr = CorePointers(record.core_pointer, record.data_pointer)
        sessions = CoreReadBatch(ptr, self.rocks.live, _EMPTY).get_sessions() or []
        changes: list[Change] = [
            (keys.store_core(discovery_key), None, None),
            (keys.core_prefix(record.core_pointer), None, keys.core_prefix(record.core_pointer + 1)),
        ]
        if record.alias is not None:
            changes.append((keys.store_core_by_alias(record.alias.namespace, record.alias.name), None, None))
        for data_pointer in {record.data_pointer, *(s.data_pointer for s in sessions)}:
            changes.append((keys.data_prefix(data_pointer), None, keys.data_prefix(data_pointer + 1)))
        self.rocks.commit(changes)

    def create_core_stream(self) -> Iterator[streams.CoreEntry]:
        """(discovery_key, core record) of every core."""
        return streams.core_stream(self.rocks.live, _EMPTY)

    def create_alias_stream(self, namespace: bytes | None = None) -> Iterator[streams.AliasEntry]:
        """(alias, discovery_key) of every alias, or of one namespace."""
        return streams.alias_stream(self.rocks.live, _EMPTY, namespace)

    # --- whole store ----------------------------------------------------------------------------

    def create_atom(self) -> Atom:
        return Atom(self.rocks)

    def clear(self) -> None:
        """Delete everything the store holds."""
        start, end = keys.store_clear_range()
        with self._lock:
            self.rocks.commit([(start, None, end)])

    def flush(self, sync: bool = True) -> None:
        """Make every committed write durable on disk (fsync the WAL)."""
        self.rocks.flush(sync)

    def catch_up(self) -> None:
        """Read-only: see what the process writing the store has committed since."""
        self.rocks.catch_up()

    def check_room(self, size: int = 0) -> None:
        """StorageFullError if a write would be refused now (the disk is full) or `size` more
        bytes would not fit."""
        self.rocks.check_room(size)

    @property
    def unlogged(self) -> bool:
        """Whether a commit made without the write-ahead log is not durable yet (the next
        logged commit writes the memtables out first)."""
        return self.rocks.unlogged

    def close(self) -> None:
        self.rocks.close()

    @property
    def closed(self) -> bool:
        return self.rocks.closed
