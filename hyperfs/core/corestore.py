"""`Corestore`: many cores in one RocksDB folder, with key pairs derived from one primary key.

Key derivation is Corestore 7's (`corestore/index.js`, `shared/spec/core-crypto.md` §10): a named
core's seed is `BK(primaryKey; NS || ns || name)`, a namespace is `B(parentNs || name)` from 32
zero bytes. Every view of a store (root, `namespace()`, `session()`) shares one open storage and
one `CoreState` per core; closing a view closes the sessions it handed out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from hyperfs.core import flat_tree
from hyperfs.core.crypto import (
    KeyPair,
    check_key,
    discovery_key as discovery_key_of,
    hash32,
    key_pair,
    keyed_hash32,
    leaf_hash,
    namespace,
    parent_hash,
)
from hyperfs.core.encoding import TreeNode
from hyperfs.core.folder_watch import FolderWatch
from hyperfs.core.hypercore import CoreState, Hypercore, open_core_state
from hyperfs.core.manifest import Manifest, default_signer_manifest, manifest_hash
from hyperfs.core.protocol.replicator import Connection, Replicator, replicate_store
from hyperfs.core.storage import Alias, CorestoreStorage
from hyperfs.core.z32 import decode_key
from hyperfs.errors import (
    CoreNotFoundError,
    CorruptStorageError,
    InvalidArgumentError,
    InvalidKeyError,
    NotWritableError,
    SessionClosedError,
)

NS = namespace("corestore", 1)[0]
DEFAULT_NAMESPACE = bytes(32)
SETTLE_TRIES = 5  # reads of a read-only store caught between its writer's log and files
SETTLE_DELAY = 0.05  # seconds, growing with each try

T = TypeVar("T")


def derive_seed(primary_key: bytes, ns: bytes, name: str) -> bytes:
    """The key pair seed of the core called `name` in namespace `ns`."""
    return keyed_hash32(primary_key, NS, ns, name.encode("utf-8"))


def child_namespace(ns: bytes, name: str) -> bytes:
    return hash32(ns, name.encode("utf-8"))


class _Root:
    """What all views of one store share: the storage, the primary key, the open cores."""

    def __init__(self, storage: CorestoreStorage, primary_key: bytes) -> None:
        self.storage = storage
        self.primary_key = primary_key
        self.cores: dict[bytes, CoreState] = {}
        self.lock = trio.Lock()
        self.closed = False
        self.replicator: Replicator | None = None  # set by the first replicate()


@dataclass
class AuditResult:
    """What `Corestore.audit()` found in one core."""

    key: bytes
    length: int
    blocks: int = 0
    nodes: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class Corestore:
    """A store folder of cores. `await ready()` (or `async with`) before use."""

    def __init__(
        self,
        path: str | None = None,
        *,
        primary_key: bytes | None = None,
        read_only: bool = False,
        _root: _Root | None = None,
        _ns: bytes = DEFAULT_NAMESPACE,
        _parent: Corestore | None = None,
    ) -> None:
        """`read_only`: the folder's cores as they are when it opens, which another process may
        be writing meanwhile (none of them is written, nor a primary key to a new folder; the
        reader's own RocksDB files go under the folder's `readers/` while it is open)."""
        if primary_key is not None:
            check_key(primary_key, 32, "primary key")
        self.path = path
        self._primary_key_arg = primary_key
        self._read_only = read_only
        self._root = _root
        self.ns = _ns
        self._parent = _parent
        self._sessions: list[Hypercore] = []
        self._children: list[Corestore] = []
        self.closed = False

    async def ready(self) -> None:
        """Open the folder; the primary key is read from it, or stored on first use."""
        if self._root is not None:
            return
        if self.path is None:
            raise InvalidArgumentError("Corestore needs a folder")
        path, wanted, read_only = self.path, self._primary_key_arg, self._read_only

        def open_sync() -> _Root:
            if not read_only:
                os.makedirs(path, exist_ok=True)
            storage = CorestoreStorage(path, read_only=read_only)
            try:
                stored = storage.get_seed()
                if stored is None and read_only:
                    raise NotWritableError(f"{path} holds no store yet, and it is opened read-only")
                if stored is None:
                    stored = storage.set_seed(wanted or os.urandom(32), overwrite=False)
                elif wanted is not None and wanted != stored:
                    raise InvalidKeyError(f"{path} holds a different primary key than the one given")
            except BaseException:
                storage.close()
                raise
            return _Root(storage, stored)

        self._root = await trio.to_thread.run_sync(open_sync)

    async def __aenter__(self) -> Corestore:
        await self.ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def root(self) -> _Root:
        if self._root is None:
            raise SessionClosedError("corestore is not ready: await store.ready() first")
        if self.closed or self._root.closed:
            raise SessionClosedError("corestore is closed")
        return self._root

    @property
    def primary_key(self) -> bytes:
        return self.root.primary_key

    # --- views --------------------------------------------------------------------------------------

    def namespace(self, name: str) -> Corestore:
        """A view whose named cores live in the namespace `name` under this one's."""
        return self._child(child_namespace(self.ns, name))

    def session(self) -> Corestore:
        """Another view on the same namespace; closing it closes only its own cores."""
        return self._child(self.ns)

    def _child(self, ns: bytes) -> Corestore:
        child = Corestore(self.path, _root=self.root, _ns=ns, _parent=self)
        self._children.append(child)
        return child

    # --- cores --------------------------------------------------------------------------------------

    def key_pair_for(self, name: str) -> KeyPair:
        """The key pair of the core called `name` in this namespace."""
        return key_pair(derive_seed(self.primary_key, self.ns, name))

    async def get(
        self,
        name: str | None = None,
        *,
        key: bytes | str | None = None,
        key_pair: KeyPair | None = None,
        discovery_key: bytes | None = None,
        manifest: Manifest | None = None,
        encryption_key: bytes | None = None,
    ) -> Hypercore:
        """A session on a core: by `name` (writable, derived key pair), by `key_pair`, by `key`
        (readable; writable if this store created it), or by `discovery_key` (must exist)."""
        root = self.root
        alias = None
        create = True
        core_key: bytes | None = None
        if name is not None:
            if not isinstance(name, str) or not name:
                raise InvalidArgumentError("a core name must be a non-empty string")
            key_pair = self.key_pair_for(name)
            alias = Alias(name, self.ns)
        elif key is not None:
            core_key = decode_key(key)
        elif discovery_key is not None:
            discovery_key = check_key(discovery_key, 32, "discovery key")
            create = False
        elif key_pair is None and manifest is None:
            raise InvalidArgumentError("get() needs a name, key, key_pair, manifest or discovery_key")

        if discovery_key is None:
            if manifest is None and key_pair is not None:
                manifest = default_signer_manifest(key_pair.public_key)
            if manifest is not None:
                core_key = manifest_hash(manifest)
            assert core_key is not None
            discovery_key = discovery_key_of(core_key)

        async with root.lock:
            state = root.cores.get(discovery_key)
            if state is None or state.closed:
                if core_key is None:
                    state = await trio.to_thread.run_sync(self._settled, lambda: self._resume_by_discovery_key(discovery_key))
                else:
                    state = await trio.to_thread.run_sync(
                        self._settled,
                        lambda: open_core_state(
                            root.storage, key=core_key, key_pair_=key_pair, manifest=manifest,
                            encryption_key=encryption_key, create=create, alias=alias,
                        ),
                    )
                assert state is not None
                root.cores[discovery_key] = state
            session = Hypercore(_state=state)
        self._sessions = [s for s in self._sessions if not s.closed]
        self._sessions.append(session)
        if root.replicator is not None:
            root.replicator.add(session)  # cores opened later replicate on live connections too
        return session

    async def replicate(self, stream: trio.abc.Stream, is_initiator: bool) -> Connection:
        """Replicate every core of the store with the peer on `stream` until it closes."""
        return await replicate_store(self, stream, is_initiator)

    def _resume_by_discovery_key(self, dkey: bytes) -> CoreState:
        auth = self.root.storage.get_auth(dkey)
        if auth is None:
            raise CoreNotFoundError(f"no core with discovery key {dkey.hex()} in this store")
        state = open_core_state(self.root.storage, key=auth.key, create=False)
        if state is None:
            raise CoreNotFoundError(f"no core with discovery key {dkey.hex()} in this store")
        return state

    async def list(self) -> list[bytes]:
        """The keys of every core in the store."""
        storage = self.root.storage

        def keys_sync() -> list[bytes]:
            out = []
            for entry in storage.create_core_stream():
                auth = storage.get_auth(entry.discovery_key)
                if auth is not None:
                    out.append(auth.key)
            return out

        return await trio.to_thread.run_sync(keys_sync)

    # --- audit --------------------------------------------------------------------------------------

    async def audit(self, progress: Callable[[AuditResult], object] | None = None) -> list[AuditResult]:
        """Re-verify every stored block and tree node of every core against its signed head."""
        results = []
        for key in await self.list():
            core = await self.get(key=key)
            try:
                result = await trio.to_thread.run_sync(audit_core, core)
            finally:
                await core.close()
            if progress is not None:
                progress(result)
            results.append(result)
        return results

    # --- closing ------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the sessions this view handed out (and its child views); the root closes the folder."""
        if self.closed:
            return
        for child in self._children:
            await child.close()
        for session in self._sessions:
            await session.close()
        self._sessions.clear()
        self.closed = True
        root = self._root
        if self._parent is None and root is not None and not root.closed:
            root.closed = True
            for state in root.cores.values():
                if not state.closed:
                    state.close()
            root.cores.clear()
            await trio.to_thread.run_sync(root.storage.close)

    @property
    def read_only(self) -> bool:
        """Opened read-only: another process may be writing the folder (see `catch_up`)."""
        return self.root.storage.read_only

    def watch(self) -> FolderWatch:
        """A watch on the database files of the folder, which the process writing it changes
        with every commit it logs and every flush: when its `wait` returns True, a read-only
        store has something to `catch_up` with."""
        return FolderWatch(self.root.storage.rocks.path)

    async def catch_up(self) -> None:
        """Read-only: take in what the process writing the folder has stored since, and move
        every open core to it (who waits for an append wakes as for one of ours)."""
        root = self.root
        states = [state for state in root.cores.values() if not state.closed]

        def read() -> list[tuple[CoreState, Any]]:
            root.storage.catch_up()
            return [(state, state.read_stored()) for state in states]

        for state, stored in await trio.to_thread.run_sync(self._settled, read):
            if stored is not None and not state.closed:
                state.apply_stored(*stored)

    def _settled(self, read: Callable[[], T]) -> T:
        """`read()` (blocking). A read-only store may be caught between the writer's log and its
        files: a head from the log whose tree nodes went to a file after the ones it reads. That
        is caught up and read again, a few times, before it counts as corruption."""
        storage = self.root.storage
        for attempt in range(1, SETTLE_TRIES):
            try:
                return read()
            except CorruptStorageError:
                if not storage.read_only:
                    raise
            time.sleep(SETTLE_DELAY * attempt)
            storage.catch_up()
        return read()

    def flush(self, sync: bool = True) -> None:
        """Fsync the write-ahead log (what an `fsync` of a mounted file asks for)."""
        self.root.storage.flush(sync)

    def check_room(self, size: int = 0) -> None:
        """StorageFullError if a write would be refused now (the disk is full) or `size` more
        bytes would not fit."""
        self.root.storage.check_room(size)


def audit_core(core: Hypercore) -> AuditResult:
    """Check a core top-down: head signature, roots, every node against its parent, every block."""
    state = core.state
    result = AuditResult(state.key, state.length)
    th = state.tree_hash
    if state.length and state.manifest is not None and not state.verify_head(th, state.length, state.fork, state.signature):
        result.errors.append(f"the signature of the head at length {state.length} does not verify")
    storage = state.storage
    nodes: dict[int, TreeNode] = {}
    try:
        for node in storage.create_tree_node_stream():
            nodes[node.index] = node
    except CorruptStorageError as err:
        result.errors.append(str(err))
    result.nodes = len(nodes)
    verified: set[int] = set()
    todo = [r.index for r in state.roots]
    for root in state.roots:
        if nodes.get(root.index) != root:
            result.errors.append(f"root {root.index} differs from the stored tree node")
    while todo:
        index = todo.pop()
        verified.add(index)
        kids = flat_tree.children(index)
        if kids is None:
            continue
        left, right = nodes.get(kids[0]), nodes.get(kids[1])
        if left is None or right is None:
            continue  # sparse: the children were never downloaded
        parent = nodes[index]
        if left.size + right.size != parent.size or parent_hash(left, right) != parent.hash:
            result.errors.append(f"tree nodes {left.index} and {right.index} do not hash to their parent {index}")
            continue
        todo.extend(kids)
    for index in sorted(set(nodes) - verified):
        if flat_tree.right_span(index) <= 2 * state.length - 2:
            result.errors.append(f"tree node {index} is not covered by the signed tree")
    try:
        for entry in storage.create_block_stream():
            result.blocks += 1
            leaf = nodes.get(2 * entry.index)
            if entry.index >= state.length or leaf is None or 2 * entry.index not in verified:
                result.errors.append(f"block {entry.index} has no verified tree node")
            elif len(entry.value) != leaf.size or leaf_hash(entry.value) != leaf.hash:
                result.errors.append(f"block {entry.index} does not match its tree node")
    except CorruptStorageError as err:
        result.errors.append(str(err))
    return result

