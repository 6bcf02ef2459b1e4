"""`Hypercore`: a signed append-only log on hypercore-storage, trio-native (hypercore 11 `index.js`).

One `CoreState` per open core holds what all its sessions share: the storage, the signed head,
the Merkle roots, the bitfield of stored blocks, waiters for missing blocks and append/truncate
listeners. A `Hypercore` is one session on it (a snapshot session freezes the head it saw).
Every change is one storage write batch (blocks + tree nodes + bitfield pages + head), committed
before the in-memory state moves; batches over `THREAD_BYTES` are built and written in a worker
thread so a mount never stalls on hashing or RocksDB.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import trio

from hyperfs.core import flat_tree, merkle, z32
from hyperfs.core.bitfield import BITS_PER_PAGE, Bitfield
from hyperfs.core.block_encryption import BlockEncryption
from hyperfs.core.crypto import KeyPair, check_key, discovery_key, key_pair, leaf_hash, tree_hash
from hyperfs.core.encoding import TreeNode
from hyperfs.core.locking import held
from hyperfs.core.manifest import (
    Manifest,
    default_signer_manifest,
    manifest_hash,
    manifest_to_dict,
)
from hyperfs.core.node_cache import NodeCache
from hyperfs.core.proof import VerifiedProof
from hyperfs.core.storage import schema
from hyperfs.core.storage.core import HypercoreStorage
from hyperfs.core.storage.rocks import Change
from hyperfs.core.storage.store import CorestoreStorage
from hyperfs.core.verifier import sign_head, verify_head
from hyperfs.core.verifier import signable as head_signable
from hyperfs.errors import (
    BlockNotAvailableError,
    CorruptStorageError,
    InvalidArgumentError,
    InvalidKeyError,
    NotWritableError,
    RequestTimeoutError,
    SessionClosedError,
    TreeNodeMissingError,
    VerificationError,
)

THREAD_BYTES = 1024 * 1024
"""Appends above this many bytes run in a worker thread. Below it, hashing and storing take
~2 ms at most, less than the thread costs: a mount's grouped commit of the small files of an
untar (~1.5 MiB each 50 ms) held the drive's lock meanwhile and shared the GIL with the loop,
so every close behind it waited."""

MAX_SEEK_FETCHES = 64  # requests a seek in a sparse core makes for tree nodes: a level each, at most
PARALLEL_HASH_BYTES = 16 * 1024
"""Blocks at least this big are hashed on a thread pool when appended in batches."""

_STREAM_BATCH = 32


@functools.cache
def _hash_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="hyperfs-hash")


def _leaf_hashes(blocks: Sequence[bytes]) -> list[bytes]:
    return [leaf_hash(block) for block in blocks]


def _hash_in_parallel(blocks: Sequence[bytes]) -> Callable[[], list[bytes]]:
    """Start hashing `blocks` on the pool, one half a thread (one task each: a task per block
    cost a cross-thread hand-off per 64 KiB); the returned function waits for the hashes."""
    half = (len(blocks) + 1) // 2
    parts = [_hash_pool().submit(_leaf_hashes, blocks[:half]), _hash_pool().submit(_leaf_hashes, blocks[half:])]
    return lambda: parts[0].result() + parts[1].result()


async def pieces(blocks: AsyncIterator[bytes], skip: int, count: int) -> AsyncIterator[bytes]:
    """`count` bytes of a stream of blocks, starting `skip` bytes into the first, as the
    non-empty part of each block they cover."""
    async for block in blocks:
        piece = block[skip : skip + count]
        skip = 0
        if piece:
            yield piece
            count -= len(piece)
        if count <= 0:
            return


def cut(blocks: Sequence[bytes], index: int, skip: int, size: int) -> tuple[bytes, int, int]:
    """The `size` bytes of `blocks` (block `index` first) that start `skip` bytes into the
    first, fewer where the blocks end, as one buffer, and where they end: (block, offset in it).
    A whole block is not copied; the pieces are joined once."""
    parts: list[bytes] = []
    for block in blocks:
        piece = block[skip : skip + size]
        parts.append(piece)
        size -= len(piece)
        if skip + len(piece) < len(block):
            skip += len(piece)  # ends inside this block
            break
        index, skip = index + 1, 0
        if size == 0:
            break
    return _joined(parts), index, skip


@contextmanager
def _peers_within(timeout: float, what: str) -> Iterator[None]:
    """Wait for peers at most `timeout` seconds (0: no limit), then RequestTimeoutError saying
    `what` (the body is cancelled)."""
    with trio.move_on_after(timeout if timeout > 0 else math.inf) as scope:
        yield
    if scope.cancelled_caught:
        raise RequestTimeoutError(f"{what} within {timeout}s")


def _joined(parts: list[bytes]) -> bytes:
    return parts[0] if len(parts) == 1 else b"".join(parts)


class Head(NamedTuple):
    """The signed head of a core: what a peer's upgrade proof must reach."""

    fork: int
    length: int
    tree_hash: bytes
    signature: bytes | None


# --- shared state -------------------------------------------------------------------------------


@dataclass
class _Change:
    """A committed change, applied to the in-memory state in the trio thread."""

    fork: int
    length: int
    roots: list[TreeNode]
    signature: bytes | None
    truncated_to: int | None = None


class CoreState:
    """What every session of one core shares (JS `Core` + `SessionState` of the default session)."""

    def __init__(
        self,
        storage: HypercoreStorage,
        auth: schema.Auth,
        *,
        encryption_key: bytes | None = None,
        is_block_key: bool = False,
        owned_store: CorestoreStorage | None = None,
    ) -> None:
        self.storage = storage
        self.key = auth.key
        self.discovery_key = auth.discovery_key
        if auth.manifest is not None and any(s.signature != "ed25519" for s in auth.manifest.signers):
            raise CorruptStorageError("stored manifest uses an unknown hash or signature scheme")
        self.manifest = auth.manifest
        self.key_pair = auth.key_pair
        self.encryption_key = encryption_key if encryption_key is not None else auth.encryption_key
        self.encryption = (
            BlockEncryption.for_core(self.key, self.encryption_key, is_block_key=is_block_key)
            if self.encryption_key is not None
            else None
        )
        self.owned_store = owned_store
        self.replicator: Any = None
        self.lock = trio.Lock()
        self.sessions = 0
        self.closed = False
        self._waiters: dict[int, list[trio.Event]] = {}
        self._appended = trio.Event()
        self._truncated = trio.Event()
        self._append_channels: list[trio.MemorySendChannel[tuple[int, int]]] = []
        self._truncate_channels: list[trio.MemorySendChannel[tuple[int, int]]] = []
        self.nodes = NodeCache()
        self._load()

    # --- loading and checking ---------------------------------------------------------------------

    def _load(self) -> None:
        """Read head, roots and bitfield; the roots must hash to the stored head."""
        rx = self.storage.read()
        head = rx.get_head()
        self.fork = head.fork if head else 0
        self.length = head.length if head else 0
        self.signature = head.signature if head else None
        self.roots = self._stored_roots(self.length, rx.get_tree_node, head.root_hash if head else None)
        self.byte_length = merkle.byte_length(self.roots)
        self.bitfield = Bitfield(self.storage.create_bitfield_stream())
        self.contiguous_length = min(self.bitfield.first_unset(0), self.length)

    def tree_node(self, index: int) -> TreeNode | None:
        """Stored tree node `index` (None if it is not stored), kept in `nodes` once read."""
        return self.nodes.get(index, self._read_tree_node)

    def _read_tree_node(self, index: int) -> TreeNode | None:
        return self.storage.read().get_tree_node(index)

    def _stored_roots(self, length: int, get: Any, root_hash: bytes | None = None) -> list[TreeNode]:
        """The stored roots at `length`, which must hash to `root_hash` when given."""
        roots = []
        for index in merkle.root_indexes(length):
            node = get(index)
            if node is None:
                raise CorruptStorageError(f"core {self.id}: tree node {index} (a root at length {length}) is missing")
            roots.append(node)
        if root_hash is not None and tree_hash(roots) != root_hash:
            raise CorruptStorageError(f"core {self.id}: stored tree nodes do not hash to the signed head at length {length}")
        return roots

    @property
    def id(self) -> str:
        return z32.encode_id(self.key)

    @property
    def padding(self) -> int:
        return self.encryption.padding if self.encryption is not None and self.manifest is not None else 0

    @property
    def writable(self) -> bool:
        return (
            self.key_pair is not None
            and self.key_pair.secret_key is not None
            and self.manifest is not None
            and not self.storage.snapshotted
            and not self.storage.store.read_only
        )

    @property
    def tree_hash(self) -> bytes:
        return tree_hash(self.roots)

    def head(self) -> Head:
        return Head(self.fork, self.length, self.tree_hash, self.signature)

    def verify_head(self, th: bytes, length: int, fork: int, signature: bytes | None) -> bool:
        return verify_head(self.manifest, self.key, th, length, fork, signature)

    # --- writes (blocking; run inline or in a worker thread) ----------------------------------------

    def append_into(self, tx: Any, blocks: Sequence[bytes]) -> _Change:
        """Encrypt, hash and sign `blocks`, adding them, their tree nodes, bitfield pages and the
        new head to the write batch `tx` (committed by the caller)."""
        start = self.length
        fork = self.fork
        if self.encryption is not None:
            stored = [self.encryption.encrypt(start + i, b, fork) for i, b in enumerate(blocks)]
        else:
            stored = [bytes(b) for b in blocks]
        # Big batches: hash the leaves on the pool (hashlib drops the GIL) while this thread
        # copies the blocks into the write batch.
        hashes = _hash_in_parallel(stored) if len(stored) > 1 and len(stored[0]) >= PARALLEL_HASH_BYTES else None
        for i, block in enumerate(stored):
            tx.put_block(start + i, block)
        nodes, roots = merkle.append_leaves(self.roots, start, stored, hashes() if hashes else None)
        length = start + len(stored)
        th = tree_hash(roots)
        signature = self._sign(th, length, fork)
        for node in nodes:
            tx.put_tree_node(node)
        self._put_bitfield(tx, [(start, length, True)])
        tx.set_head(schema.Head(fork, length, th, signature))
        return _Change(fork, length, roots, signature)

    def _sign(self, th: bytes, length: int, fork: int) -> bytes:
        assert self.manifest is not None and self.key_pair is not None
        return sign_head(self.manifest, self.key, self.key_pair.secret_key, th, length, fork)

    def _put_bitfield(self, tx: Any, runs: Sequence[tuple[int, int, bool]]) -> None:
        """Write the bitfield pages as they will be once the [start, end) runs are set to their
        values, in order; the live bitfield is not touched."""
        preview = Bitfield()
        for start, end, value in runs:
            first, last = start // BITS_PER_PAGE, (max(end, start + 1) - 1) // BITS_PER_PAGE
            for p in range(first, last + 1):
                page = self.bitfield.page(p)
                if page is not None and preview.page(p) is None:
                    preview.load_page(p, page)
            preview.set_range(start, end, value)
        for index, page in preview.take_dirty():
            tx.put_bitfield_page(index, page)

    def truncate_sync(self, length: int, fork: int) -> _Change:
        """Cut the core to `length` under a new fork id, re-signed, in one write batch."""
        old = self.length
        rx = self.storage.read()
        roots = self._stored_roots(length, rx.get_tree_node)
        th = tree_hash(roots)
        signature = self._sign(th, length, fork) if self.writable else None
        tx = self.storage.write()
        self._delete_after(tx, length, old)
        self._put_bitfield(tx, [(length, max(old, length), False)])
        tx.set_head(schema.Head(fork, length, th, signature))
        tx.flush()
        return _Change(fork, length, roots, signature, truncated_to=length)

    def _delete_after(self, tx: Any, length: int, old: int) -> None:
        """Delete the blocks and tree nodes past `length` (the caller clears their bits)."""
        tx.delete_block_range(length, max(old, length))
        start, end, extra = merkle.truncated_nodes(old, length)
        if end > start:
            tx.delete_tree_node_range(start, end)
        for index in extra:
            tx.delete_tree_node(index)

    def clear_sync(self, start: int, end: int) -> None:
        tx = self.storage.write()
        tx.delete_block_range(start, end)
        self._put_bitfield(tx, [(start, end, False)])
        tx.flush()

    def apply_proofs_sync(self, proofs: Sequence[VerifiedProof]) -> list[tuple[VerifiedProof, _Change | None]]:
        """Store verified proofs, in order, in one write batch: blocks, nodes, upgrades (truncating
        on a new fork). A proof without an upgrade made for another fork than the one it would
        land on is stale and skipped. Returns the stored proofs with the head change each made."""
        tx = self.storage.write()
        fork, length = self.fork, self.length
        runs: list[tuple[int, int, bool]] = []
        applied: list[tuple[VerifiedProof, _Change | None]] = []
        learnt = self.manifest is not None
        # Proofs of nearby blocks share most of their upper nodes: write each node once. Within
        # a fork a node index always holds the same node, so only a truncation splits the batch.
        nodes: dict[int, TreeNode] = {}
        for verified in proofs:
            upgrade = verified.upgrade
            change = None
            if upgrade is not None and (upgrade.fork != fork or upgrade.length > length):
                truncated_to = None
                if upgrade.fork != fork and upgrade.start < length:
                    keep = max(upgrade.start, self._shared_prefix(upgrade.roots, length, nodes))
                    self._put_nodes(tx, nodes)
                    if keep < length:
                        self._delete_after(tx, keep, length)
                        runs.append((keep, length, False))
                    truncated_to = keep
                tx.set_head(schema.Head(upgrade.fork, upgrade.length, upgrade.tree_hash, upgrade.signature))
                change = _Change(upgrade.fork, upgrade.length, list(upgrade.roots), upgrade.signature, truncated_to)
                fork, length = upgrade.fork, upgrade.length
            elif verified.fork != fork:
                continue
            if verified.manifest is not None and not learnt:
                auth = self.storage.read().get_auth()
                if auth is not None:
                    tx.set_auth(replace(auth, manifest=verified.manifest))
                learnt = True
            nodes.update((node.index, node) for node in verified.nodes)
            if verified.block_index is not None and verified.value is not None:
                tx.put_block(verified.block_index, verified.value)
                runs.append((verified.block_index, verified.block_index + 1, True))
            applied.append((verified, change))
        if applied:
            self._put_nodes(tx, nodes)
            self._put_bitfield(tx, runs)
            tx.flush()
        return applied

    def _shared_prefix(self, roots: Sequence[TreeNode], length: int, unsaved: dict[int, TreeNode]) -> int:
        """How many of our first `length` blocks a new fork with `roots` keeps: the blocks under
        its leading roots that we hold the very same node for (the same hash at the same index
        is the same subtree). Kept blocks need not be fetched again; JS Hypercore finds the exact
        common prefix by fetching nodes below the first differing root, this looks at the roots
        only (a truncation near the end keeps at least the largest root, half the core)."""
        rx = self.storage.read()
        kept = 0
        for root in roots:
            end = flat_tree.right_span(root.index) // 2 + 1
            ours = unsaved.get(root.index) or rx.get_tree_node(root.index)
            if end > length or ours is None or (ours.size, ours.hash) != (root.size, root.hash):
                break
            kept = end
        return kept

    @staticmethod
    def _put_nodes(tx: Any, nodes: dict[int, TreeNode]) -> None:
        for node in nodes.values():
            tx.put_tree_node(node)
        nodes.clear()

    # --- in-memory state (trio thread only) -------------------------------------------------------

    def apply_change(self, change: _Change, stored: tuple[int, int] | None) -> None:
        """Move the in-memory state to a committed change and wake who waits on it."""
        old_length = self.length
        # Every block below `scan` stays stored, so the scan for the first gap starts there, not
        # at block 0 (a scan of every full bitfield page at each append of a big core).
        scan = self.contiguous_length
        if change.truncated_to is not None:
            self.nodes.forget()
            self.bitfield.set_range(change.truncated_to, max(old_length, change.truncated_to), False)
            self.bitfield.take_dirty()
            scan = min(scan, change.truncated_to)
        self.fork, self.length, self.roots, self.signature = change.fork, change.length, change.roots, change.signature
        self.byte_length = merkle.byte_length(self.roots)
        if stored is not None:
            self.mark_stored(*stored)
        self.contiguous_length = min(self.bitfield.first_unset(scan), self.length)
        self._announce(old_length, change)

    def _announce(self, old_length: int, change: _Change) -> None:
        """Wake who waits for a truncation or an append, once the state shows `change`."""
        if change.truncated_to is not None:
            self._notify(self._truncate_channels, (change.truncated_to, change.fork))
            self._truncated.set()
            self._truncated = trio.Event()
        if self.length > old_length or change.truncated_to is not None:
            self._notify(self._append_channels, (self.length, self.byte_length - self.padding * self.length))
            self._appended.set()
            self._appended = trio.Event()

    def read_stored(self) -> tuple[_Change, Bitfield] | None:
        """What another process stored since this state was read (a read-only store following
        the process that writes it): its head as a change, and which blocks are stored; None if
        nothing moved. Blocking: run it in a thread."""
        rx = self.storage.read()
        head = rx.get_head()
        moved = head is not None and (head.fork, head.length, head.signature) != (self.fork, self.length, self.signature)
        if not moved and self.contiguous_length >= self.length:
            return None  # every block was stored already, and the head is the same
        change = _Change(self.fork, self.length, self.roots, self.signature)
        if moved:
            roots = self._stored_roots(head.length, rx.get_tree_node, head.root_hash)
            # A new fork cut the log somewhere below both lengths: everything is read again.
            change = _Change(head.fork, head.length, roots, head.signature, 0 if head.fork != self.fork else None)
        return change, Bitfield(self.storage.create_bitfield_stream())

    def apply_stored(self, change: _Change, bitfield: Bitfield) -> None:
        """Move the in-memory state to what `read_stored` found and wake who waits on it."""
        old_length = self.length
        if change.truncated_to is not None:
            self.nodes.forget()
        self.fork, self.length, self.roots, self.signature = change.fork, change.length, change.roots, change.signature
        self.byte_length = merkle.byte_length(self.roots)
        self.bitfield = bitfield
        self.contiguous_length = min(bitfield.first_unset(0), self.length)
        self._wake([i for i in self._waiters if bitfield.get(i)])
        self._announce(old_length, change)

    def proofs_stored(self, applied: Sequence[tuple[VerifiedProof, _Change | None]]) -> None:
        """Move the in-memory state past committed proofs (`apply_proofs_sync`) and wake waiters."""
        for verified, change in applied:
            if self.manifest is None and verified.manifest is not None:
                self.manifest = verified.manifest
            index = verified.block_index
            stored = (index, index + 1) if index is not None and verified.value is not None else None
            if change is not None:
                self.apply_change(change, stored)
            elif stored is not None:
                self.mark_stored(*stored)
        # Every block below contiguous_length is stored, so the scan may start there.
        self.contiguous_length = min(self.bitfield.first_unset(self.contiguous_length), self.length)

    def mark_stored(self, start: int, end: int) -> None:
        self.bitfield.set_range(start, end, True)
        self.bitfield.take_dirty()
        self._wake([i for i in self._waiters if start <= i < end])

    def _wake(self, indexes: list[int]) -> None:
        """Wake the `get()`s waiting for blocks `indexes` (stored now)."""
        for index in indexes:
            for event in self._waiters.pop(index):
                event.set()

    def mark_cleared(self, start: int, end: int) -> None:
        self.bitfield.set_range(start, end, False)
        self.bitfield.take_dirty()
        self.contiguous_length = min(self.contiguous_length, start)

    @staticmethod
    def _notify(channels: list[trio.MemorySendChannel[tuple[int, int]]], value: tuple[int, int]) -> None:
        for channel in list(channels):
            try:
                channel.send_nowait(value)
            except trio.WouldBlock:
                pass  # a slow listener misses an intermediate value, never the latest wake-up
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                channels.remove(channel)

    def waiting_indexes(self) -> list[int]:
        """Blocks that `get()` calls are waiting for (a replicator attached late asks for them)."""
        return list(self._waiters)

    def waiting_for(self, index: int) -> bool:
        """Does a `get()` call wait for block `index`?"""
        return index in self._waiters

    def waiter(self, index: int) -> trio.Event:
        event = trio.Event()
        self._waiters.setdefault(index, []).append(event)
        return event

    def drop_waiter(self, index: int, event: trio.Event) -> None:
        events = self._waiters.get(index)
        if events and event in events:
            events.remove(event)
            if not events:
                del self._waiters[index]

    def subscribe(self, kind: str) -> trio.MemoryReceiveChannel[tuple[int, int]]:
        send, receive = trio.open_memory_channel[tuple[int, int]](math.inf)
        (self._append_channels if kind == "append" else self._truncate_channels).append(send)
        return receive

    def close(self) -> None:
        self.closed = True
        for events in self._waiters.values():
            for event in events:
                event.set()
        self._waiters.clear()
        for channel in self._append_channels + self._truncate_channels:
            channel.close()
        self._appended.set()
        self._truncated.set()
        self.storage.close()
        if self.owned_store is not None:
            self.owned_store.close()


def open_core_state(
    store: CorestoreStorage,
    *,
    key: bytes | None = None,
    key_pair_: KeyPair | None = None,
    manifest: Manifest | None = None,
    encryption_key: bytes | None = None,
    is_block_key: bool = False,
    create: bool = True,
    alias: schema.Alias | None = None,
    owned_store: CorestoreStorage | None = None,
) -> CoreState | None:
    """Resume the core of `key` (or of the key pair's default manifest) or create it.

    Returns None when it does not exist and `create` is False. Blocking: run it in a thread."""
    if key_pair_ is not None:
        check_key(key_pair_.public_key, 32, "public key")
        if key_pair_.secret_key is not None:
            check_key(key_pair_.secret_key, 64, "secret key")
        key_pair_ = KeyPair(key_pair_.public_key, key_pair_.secret_key)  # the storage record keeps this type
        if manifest is None:
            manifest = default_signer_manifest(key_pair_.public_key)
    if manifest is not None:
        derived = manifest_hash(manifest)
        if key is not None and check_key(key, 32, "core key") != derived:
            raise InvalidKeyError("the core key does not match its manifest / key pair")
        key = derived
    if key is None:
        raise InvalidArgumentError("a core needs a key, a key pair or a manifest")
    key = check_key(key, 32, "core key")
    if encryption_key is not None:
        check_key(encryption_key, 32, "encryption key")
    dkey = discovery_key(key)
    storage = store.resume(dkey)
    if storage is None:
        if not create:
            return None
        storage = store.create(
            key=key,
            discovery_key=dkey,
            manifest=manifest,
            key_pair=key_pair_,
            encryption_key=encryption_key,
            alias=alias,
        )
    auth = storage.read().get_auth()
    if auth is None:
        raise CorruptStorageError(f"core {dkey.hex()} has no auth record")
    if auth.key != key:
        raise CorruptStorageError(f"core {dkey.hex()}: stored key does not match its discovery key")
    if encryption_key is not None and auth.encryption_key not in (None, encryption_key):
        raise InvalidKeyError(f"core {z32.encode_id(key)} is stored with a different encryption key")
    learned_manifest = auth.manifest is None and manifest is not None
    learned_secret = key_pair_ is not None and key_pair_.secret_key is not None and (
        auth.key_pair is None or auth.key_pair.secret_key is None
    )
    learned_encryption = auth.encryption_key is None and encryption_key is not None
    if learned_manifest or learned_secret or learned_encryption:
        # A reader opened again with the manifest, key pair or encryption key: remember them.
        auth = replace(
            auth,
            manifest=manifest if learned_manifest else auth.manifest,
            key_pair=key_pair_ if learned_secret else auth.key_pair,
            encryption_key=auth.encryption_key or encryption_key,
        )
        tx = storage.write()
        tx.set_auth(auth)
        tx.flush()
    return CoreState(
        storage, auth, encryption_key=encryption_key, is_block_key=is_block_key, owned_store=owned_store
    )


# --- the session --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    fork: int
    length: int
    byte_length: int
    roots: list[TreeNode]
    signature: bytes | None
    storage: HypercoreStorage


class Hypercore:
    """A session on a core. `await ready()` before use (Corestore does it for you)."""

    def __init__(
        self,
        storage: str | CorestoreStorage | None = None,
        key: bytes | str | None = None,
        *,
        key_pair: KeyPair | None = None,
        manifest: Manifest | None = None,
        encryption_key: bytes | None = None,
        is_block_key: bool = False,
        _state: CoreState | None = None,
        _snapshot: bool = False,
    ) -> None:
        self._open_args = (
            storage,
            z32.decode_key(key) if key is not None else None,
            key_pair,
            manifest,
            encryption_key,
            is_block_key,
        )
        self._state = _state
        self._snap: _Snapshot | None = None
        self._want_snapshot = _snapshot
        self.closed = False
        if _state is not None:
            self._attach(_state)

    def _attach(self, state: CoreState) -> None:
        self._state = state
        state.sessions += 1
        if self._want_snapshot:
            self._snap = _Snapshot(
                state.fork, state.length, state.byte_length, list(state.roots), state.signature,
                state.storage.snapshot(),
            )

    async def ready(self) -> None:
        """Open (or create) the core. A core made without key or key pair gets a new key pair."""
        if self._state is not None:
            return
        storage, key, kp, manifest, encryption_key, is_block_key = self._open_args
        if key is None and kp is None and manifest is None:
            kp = key_pair()

        def open_sync() -> CoreState:
            owned = None
            store = storage
            if store is None or isinstance(store, str):
                if store is None:
                    raise InvalidArgumentError("Hypercore needs a storage folder or store")
                owned = store = CorestoreStorage(store)
            try:
                state = open_core_state(
                    store, key=key, key_pair_=kp, manifest=manifest, encryption_key=encryption_key,
                    is_block_key=is_block_key, owned_store=owned,
                )
            except BaseException:
                if owned is not None:
                    owned.close()
                raise
            assert state is not None
            return state

        self._attach(await trio.to_thread.run_sync(open_sync))

    # --- properties -------------------------------------------------------------------------------

    @property
    def state(self) -> CoreState:
        if self._state is None:
            raise SessionClosedError("core is not ready: await core.ready() first")
        if self.closed or self._state.closed:
            raise SessionClosedError(f"core {self._state.id} is closed")
        return self._state

    def _check_open(self) -> None:
        self.state  # noqa: B018  (the property raises SessionClosedError)

    @property
    def key(self) -> bytes:
        return self.state.key

    @property
    def discovery_key(self) -> bytes:
        return self.state.discovery_key

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def key_pair(self) -> KeyPair | None:
        return self.state.key_pair

    @property
    def manifest(self) -> Manifest | None:
        return self.state.manifest

    @property
    def encryption_key(self) -> bytes | None:
        return self.state.encryption_key

    @property
    def padding(self) -> int:
        return self.state.padding

    @property
    def writable(self) -> bool:
        return self._snap is None and self.state.writable

    @property
    def readable(self) -> bool:
        return not self.closed and self._state is not None and not self._state.closed

    @property
    def fork(self) -> int:
        return self._snap.fork if self._snap else self.state.fork

    @property
    def length(self) -> int:
        return self._snap.length if self._snap else self.state.length

    @property
    def contiguous_length(self) -> int:
        return min(self.state.contiguous_length, self.length)

    @property
    def byte_length(self) -> int:
        """Bytes of all blocks as the user sees them (without encryption padding)."""
        stored = self._snap.byte_length if self._snap else self.state.byte_length
        return stored - self.padding * self.length

    @property
    def head(self) -> Head:
        if self._snap:
            s = self._snap
            return Head(s.fork, s.length, tree_hash(s.roots), s.signature)
        return self.state.head()

    @property
    def replicator(self) -> Any:
        return self.state.replicator

    @replicator.setter
    def replicator(self, value: Any) -> None:
        store = self.state.storage.store
        if value is not None and store.unlogged:
            # Peers will see this core from now on: nothing they see may be lost in a crash.
            store.flush(sync=False)
        self.state.replicator = value

    @property
    def _roots(self) -> list[TreeNode]:
        return self._snap.roots if self._snap else self.state.roots

    def _storage(self) -> HypercoreStorage:
        return self._snap.storage if self._snap else self.state.storage

    def signable(self, length: int | None = None, fork: int | None = None) -> bytes:
        """The bytes a head at (length, fork) is signed over (`core.signable`)."""
        length = self.length if length is None else length
        th = merkle.hash_at(length, self.read_node_sync) if length != self.length else tree_hash(self._roots)
        return head_signable(self.manifest, self.key, th, length, self.fork if fork is None else fork)

    # --- sessions ---------------------------------------------------------------------------------

    def session(self) -> Hypercore:
        """Another session on the same core (closing it leaves the others open)."""
        return Hypercore(_state=self.state)

    def snapshot(self) -> Hypercore:
        """A read-only session that keeps seeing the core as it is now."""
        return Hypercore(_state=self.state, _snapshot=True)

    async def close(self) -> None:
        if self.closed or self._state is None:
            self.closed = True
            return
        self.closed = True
        state = self._state
        if self._snap is not None:
            self._snap.storage.close()
        state.sessions -= 1
        if state.sessions <= 0 and not state.closed:
            state.close()

    async def purge(self) -> None:
        """Delete the core and all its data from the store, closing every session on it."""
        state = self.state
        async with state.lock:
            await trio.to_thread.run_sync(state.storage.store.delete_core, state.discovery_key)
            state.close()
        self.closed = True

    async def __aenter__(self) -> Hypercore:
        await self.ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- writes -----------------------------------------------------------------------------------

    def _check_writable(self) -> CoreState:
        state = self.state
        if self._snap is not None:
            raise NotWritableError(f"core {state.id}: a snapshot is read-only")
        if not state.writable:
            raise NotWritableError(f"core {state.id} was opened without its secret key: it is read-only")
        return state

    async def append(
        self, blocks: bytes | bytearray | memoryview | Iterable[bytes], *, logged: bool = True
    ) -> tuple[int, int]:
        """Append one block or a list of blocks; returns the new (length, byte_length).

        `logged=False` skips RocksDB's write-ahead log (a bulk write costs about half as much):
        the blocks become durable with the store's next logged write, `flush()` or close, and a
        crash before that loses them (the core reopens at its length before them, as if they
        were never appended). Honoured only while no replicator is attached, so no peer can
        hold a signed block that a crash could take back, and while the disk has room (see
        `storage.rocks.RESERVE`)."""
        [result] = await append_together([(self, blocks)], logged=logged)
        return result

    async def truncate(self, length: int, fork: int | None = None) -> None:
        """Cut the core to `length` blocks; the fork id becomes `fork` (default: fork + 1)."""
        state = self._check_writable()
        async with state.lock:
            if not 0 <= length <= state.length:
                raise InvalidArgumentError(f"cannot truncate to {length}: core length is {state.length}")
            new_fork = state.fork + 1 if fork is None else fork
            change = await trio.to_thread.run_sync(state.truncate_sync, length, new_fork)
            state.apply_change(change, None)

    async def clear(self, start: int, end: int | None = None) -> None:
        """Delete the stored blocks [start, end) (end = start + 1); the tree keeps proving them."""
        state = self.state
        end = start + 1 if end is None else end
        if start < 0 or end < start:
            raise InvalidArgumentError(f"bad range to clear: [{start}, {end})")
        async with state.lock:
            end = min(end, state.length)
            if start >= end:
                return
            await trio.to_thread.run_sync(state.clear_sync, start, end)
            state.mark_cleared(start, end)

    # --- reads ------------------------------------------------------------------------------------

    async def get(self, index: int, wait: bool = True, timeout: float = 0, decrypt: bool = True) -> bytes:
        """Block `index`. Missing: wait for replication (timeout seconds, 0 = no limit), or
        BlockNotAvailableError at once with `wait=False`. `decrypt=False` gives the ciphertext
        without its padding, as JS does."""
        state = self.state
        if index < 0:
            raise InvalidArgumentError(f"block index must not be negative: {index}")
        data = self._read_local(state, index)
        if data is None:
            snap = self._snap
            if not wait or snap is not None and (index >= snap.length or snap.fork != state.fork):
                raise BlockNotAvailableError(f"block {index} of core {state.id} is not available locally")
            await self._wait_block(state, index, timeout)
            return await self.get(index, wait=False, decrypt=decrypt)
        if state.encryption is None:
            return data
        return state.encryption.decrypt(index, data) if decrypt else data[state.encryption.padding :]

    def _read_local(self, state: CoreState, index: int) -> bytes | None:
        """The stored bytes of a block this session can see, or None."""
        snap = self._snap
        if snap is not None:
            if index >= snap.length:
                return None
            data = snap.storage.read().get_block(index)
            if data is not None or snap.fork != state.fork:
                return data
            # Not stored when the snapshot was taken; replication may have stored it since.
        if state.bitfield.get(index):
            return state.storage.read().get_block(index)
        return None

    async def _wait_block(self, state: CoreState, index: int, timeout: float) -> None:
        event = state.waiter(index)
        try:
            if state.replicator is not None:
                state.replicator.want(self, index)
            with _peers_within(timeout, f"block {index} of core {state.id}: no peer sent it"):
                await event.wait()
        finally:
            state.drop_waiter(index, event)

    def _decode(self, index: int, data: bytes) -> bytes:
        enc = self.state.encryption
        return enc.decrypt(index, data) if enc is not None else data

    async def has(self, start: int, end: int | None = None) -> bool:
        """True if every block in [start, end) (end = start + 1) is stored locally."""
        end = start + 1 if end is None else end
        return self.state.bitfield.has_all(start, end)

    def has_local(self, index: int) -> bool:
        return self.state.bitfield.get(index)

    def local_ranges(self, start: int = 0) -> Iterator[tuple[int, int]]:
        """The stored runs [start, end) of blocks, in order."""
        return self.state.bitfield.ranges(start)

    async def seek(self, byte_offset: int, guess: int | None = None, timeout: float = 0) -> tuple[int, int]:
        """(block index, offset in it) of a byte offset of the user data. `guess`: the block
        the caller expects it in, checked first (a right one costs a quarter of a seek).

        A sparse core may lack the tree nodes a seek reads. It holds those of the blocks it
        has, with their proofs' nodes. So it fetches block `guess` (waiting as `get` does),
        which a caller reads next when the guess is right, and whose proof brings the nodes
        before it; then, while the walk down from the roots still lacks a node, it asks a peer
        for the nodes under that node's parent that lead to the byte (a seek request), and
        where no peer answers one, fetches the first block under the node, whose proof brings
        it: a level per round. A byte past the length first waits for the peers' length."""
        replicator = self.state.replicator
        if byte_offset > self.byte_length and replicator is not None:
            # A peer's length may not be here yet (a drive's entry names bytes of its content
            # core): catch up with the peers first, as `get` waits for a block past the length.
            with _peers_within(timeout, f"core {self.state.id}: no peer sent a length past byte {byte_offset}"):
                await replicator.update(self)
        done: set[tuple[str, int | None]] = set()
        while True:
            try:
                return await trio.to_thread.run_sync(self.seek_sync, byte_offset, guess)
            except TreeNodeMissingError as err:
                replicator = self.state.replicator
                missing = err.index
                steps = [("get", guess), ("locate", missing), ("get", flat_tree.left_span(missing) // 2)]
                step = next((s for s in steps if s[1] is not None and s not in done), None)
                if replicator is None or step is None or len(done) >= MAX_SEEK_FETCHES:
                    raise
            done.add(step)
            if step[0] == "locate":
                with _peers_within(timeout, f"core {self.state.id}: no peer located byte {byte_offset}"):
                    await replicator.locate(self, byte_offset, missing)  # the next walk tells
            else:
                await self.get(step[1], timeout=timeout)

    def seek_sync(self, byte_offset: int, guess: int | None = None) -> tuple[int, int]:
        """`seek` in the calling thread, for a core whose tree is stored here."""
        if not 0 <= byte_offset <= self.byte_length:
            raise InvalidArgumentError(f"byte offset {byte_offset} is outside 0..{self.byte_length}")
        if guess is not None:
            found = merkle.seek_at(byte_offset, guess, self.length, self._node_reader(), self.padding)
            if found is not None:
                return found
        return merkle.seek(byte_offset, self._roots, self.read_node_sync, self.padding)

    async def tree_hash(self, length: int | None = None) -> bytes:
        """The Merkle tree hash at `length` (default: the current length)."""
        if length is None or length == self.length:
            return tree_hash(self._roots)
        if not 0 <= length <= self.length:
            raise InvalidArgumentError(f"length {length} is outside 0..{self.length}")
        return await trio.to_thread.run_sync(merkle.hash_at, length, self.read_node_sync)

    async def info(self, storage: bool = False) -> dict[str, Any]:
        """A summary like JS `core.info()` (snake_case keys); with `storage`, bytes stored per kind."""
        state = self.state
        out: dict[str, Any] = {
            "key": state.key,
            "discovery_key": state.discovery_key,
            "length": self.length,
            "contiguous_length": self.contiguous_length,
            "byte_length": self.byte_length,
            "fork": self.fork,
            "padding": self.padding,
            "writable": self.writable,
            "manifest": manifest_to_dict(state.manifest) if state.manifest is not None else None,
        }
        if storage:
            out["storage"] = await trio.to_thread.run_sync(self._storage_info)
        return out

    def _storage_info(self) -> dict[str, int]:
        storage = self._storage()
        blocks = sum(len(e.value) for e in storage.create_block_stream())
        nodes = sum(1 for _ in storage.create_tree_node_stream())
        pages = sum(len(e.page) for e in storage.create_bitfield_stream())
        return {"blocks": blocks, "tree": nodes * 40, "bitfield": pages}

    async def read_stream(self, start: int = 0, end: int | None = None, live: bool = False) -> AsyncIterator[bytes]:
        """The blocks [start, end) in order; `live` keeps following appends (no end)."""
        index = start
        while True:
            stop = self.length if end is None else end
            if index >= stop:
                if not live or end is not None:
                    return
                await self.wait_append()
                continue
            count = min(_STREAM_BATCH, stop - index)
            if self.state.bitfield.has_all(index, index + count):
                for block in await self._get_many(index, count):
                    yield block
                index += count
            else:
                yield await self.get(index)
                index += 1

    async def _get_many(self, start: int, count: int) -> list[bytes]:
        rx = self._storage().read()
        values = await trio.to_thread.run_sync(rx.get_blocks, list(range(start, start + count)))
        out = []
        for i, value in enumerate(values):
            out.append(self._decode(start + i, value) if value is not None else await self.get(start + i))
        return out

    async def read_bytes(
        self, index: int, skip: int, size: int, end: int, timeout: float = 0
    ) -> tuple[bytes, int, int]:
        """`size` bytes of the blocks [index, end) that start `skip` bytes into block `index`
        (fewer only where the blocks end), and where they end: (block, offset in it). Stored
        blocks are fetched, cut and joined by a worker thread, so a large read costs the event
        loop one hand-off, not a step and a copy per block; missing ones are waited for as
        `get` does (up to `timeout` seconds each, 0 = no limit)."""
        if self.state.bitfield.has_all(index, end):
            try:
                return await trio.to_thread.run_sync(self.read_bytes_sync, index, skip, size, end)
            except BlockNotAvailableError:
                pass  # cleared meanwhile
        # Ask for them all at once: one round trip, not one per block.
        self.prefetch(index, min(end, index + self._blocks_for(skip + size)))
        parts: list[bytes] = []
        while size > 0 and index < end:
            data, index, skip = cut([await self.get(index, timeout=timeout)], index, skip, size)
            parts.append(data)
            size -= len(data)
        return _joined(parts), index, skip

    def read_bytes_sync(self, index: int, skip: int, size: int, end: int) -> tuple[bytes, int, int]:
        """`read_bytes` in the calling thread, of blocks stored here (BlockNotAvailableError
        for one that is not)."""
        parts: list[bytes] = []
        while size > 0 and index < end:
            count = min(end - index, self._blocks_for(skip + size))
            at = index, skip
            data, index, skip = self._read_cut(index, count, skip, size)
            if (index, skip) == at:
                raise BlockNotAvailableError(f"block {index} of core {self.state.id} is not available locally")
            parts.append(data)
            size -= len(data)
        return _joined(parts), index, skip

    def _blocks_for(self, size: int) -> int:
        """About how many blocks `size` bytes take: blocks of the core's average size (one
        while a peer's length is still to come)."""
        if not self.length:
            return 1
        return -(-size // max(1, self.byte_length // self.length))

    def prefetch(self, start: int, end: int) -> None:
        """Ask peers for the blocks in [start, end) not stored here, without waiting for them:
        a reader about to need them then waits one round trip for all (sync). Blocks past our
        length are asked for once a peer's longer head is in."""
        state = self.state
        replicator = state.replicator
        if replicator is not None:
            missing = [i for i in range(start, end) if not state.bitfield.get(i)]
            if missing:
                replicator.want(self, *missing)

    def _read_cut(self, index: int, count: int, skip: int, size: int) -> tuple[bytes, int, int]:
        """`cut` of the stored blocks [index, index + count), up to the first that is gone."""
        values = self._storage().read().get_blocks(list(range(index, index + count)))
        blocks = []
        for i, value in enumerate(values):
            if value is None:  # cleared meanwhile: the caller fetches it the slow way
                break
            blocks.append(self._decode(index + i, value))
        return cut(blocks, index, skip, size)

    async def byte_stream(self, byte_offset: int = 0, byte_length: int | None = None) -> AsyncIterator[bytes]:
        """The user bytes [byte_offset, byte_offset + byte_length) as block-sized pieces."""
        remaining = self.byte_length - byte_offset if byte_length is None else byte_length
        if remaining <= 0:
            return
        index, skip = await self.seek(byte_offset)
        async for piece in pieces(self.read_stream(index), skip, remaining):
            yield piece

    # --- notifications ----------------------------------------------------------------------------

    async def wait_append(self) -> None:
        """Return after the next append (or truncation) of the core."""
        await self.state._appended.wait()
        self._check_open()  # a close wakes waiters too

    async def wait_truncate(self) -> None:
        await self.state._truncated.wait()
        self._check_open()

    def on_append(self) -> trio.MemoryReceiveChannel[tuple[int, int]]:
        """A channel receiving (length, byte_length) after every append."""
        return self.state.subscribe("append")

    def on_truncate(self) -> trio.MemoryReceiveChannel[tuple[int, int]]:
        """A channel receiving (length, fork) after every truncation."""
        return self.state.subscribe("truncate")

    # --- replication ------------------------------------------------------------------------------

    async def update(self, wait: bool = True, timeout: float = 0) -> bool:
        """Ask the replicator for a newer head; False without one."""
        state = self.state
        if state.replicator is None:
            return False
        return bool(await state.replicator.update(self, wait=wait, timeout=timeout))

    async def download(self, start: int = 0, end: int | None = None) -> None:
        """Fetch blocks [start, end) through the replicator (nothing to do without one)."""
        state = self.state
        if state.replicator is not None:
            await state.replicator.download(self, start, end)

    def read_nodes_sync(self, indexes: Sequence[int]) -> dict[int, TreeNode]:
        """The stored tree nodes among `indexes` (blocking)."""
        get = self._node_reader()
        return {index: node for index in indexes if (node := get(index)) is not None}

    def _node_reader(self) -> Callable[[int], TreeNode | None]:
        # A snapshot reads its own nodes: a truncation since may have replaced the live ones.
        return self._snap.storage.read().get_tree_node if self._snap else self.state.tree_node

    def read_node_sync(self, index: int) -> TreeNode:
        node = self._node_reader()(index)
        if node is None:
            raise TreeNodeMissingError(f"core {self.state.id}: tree node {index} is missing", index)
        return node

    def blocks_sized_sync(self, start: int, end: int, size: int) -> bool:
        """True if each of the blocks [start, end) holds `size` bytes, by their tree leaves
        stored here (False if one is missing). A reader of such a run finds a byte's block by
        arithmetic, with no tree nodes to read. One scan of the run's nodes (blocking)."""
        padding = self.padding
        leaves = 0
        for node in self._storage().create_tree_node_stream(gte=2 * start, lt=2 * end - 1):
            if node.index % 2 == 0:
                if node.size - padding != size:
                    return False
                leaves += 1
        return leaves == end - start

    def read_block_sync(self, index: int) -> bytes | None:
        """The stored bytes of block `index` (with encryption padding), or None (blocking)."""
        return self._storage().read().get_block(index)

    async def verify_and_apply(self, verify: Callable[[], Sequence[VerifiedProof]]) -> list[VerifiedProof]:
        """Run `verify` (blocking: it checks proofs against the head and raises on a bad one),
        then store the proofs it returns in order, in one storage write, and wake who waits for
        them. Both run in one worker-thread hop under the core's lock, so the head `verify`
        sees is the head the proofs are stored on.

        Returns the proofs stored: a block proof made for a fork the core has left is skipped."""
        state = self.state
        async with state.lock:
            self._check_open()
            applied = await trio.to_thread.run_sync(lambda: state.apply_proofs_sync(verify()))
            state.proofs_stored(applied)
        return [verified for verified, _ in applied]

    async def apply_proofs(self, proofs: Sequence[VerifiedProof]) -> list[VerifiedProof]:
        """Store proofs verified already (`verify_and_apply`)."""
        return await self.verify_and_apply(lambda: proofs)

    async def apply_proof(self, verified: VerifiedProof) -> bool:
        """Store what one verified proof carries (`apply_proofs`); False if it was stale."""
        return bool(await self.apply_proofs([verified]))

    # --- checking ---------------------------------------------------------------------------------

    def verify_block_sync(self, index: int, data: bytes) -> None:
        """VerificationError unless `data` (stored bytes) hashes to block `index`'s leaf node."""
        node = self.read_node_sync(2 * index)
        if len(data) != node.size or leaf_hash(data) != node.hash:
            raise VerificationError(f"core {self.state.id}: block {index} does not match its tree node")

    def __repr__(self) -> str:
        if self._state is None:
            return "Hypercore(not ready)"
        if self.closed or self._state.closed:
            return f"Hypercore(id={self._state.id}, closed)"
        return f"Hypercore(id={self._state.id}, length={self.length}, fork={self.fork}, writable={self.writable})"


async def append_together(
    appends: Sequence[tuple[Hypercore, bytes | bytearray | memoryview | Iterable[bytes]]], *, logged: bool = True
) -> list[tuple[int, int]]:
    """Append blocks to several writable cores of one store in one atomic commit: after a crash
    every core has its new blocks or none has (a drive's file content and the Node naming it),
    and the commit costs one RocksDB write, not one per core. Returns each core's new
    (length, byte_length). `logged`: see `Hypercore.append`."""
    work = [(core, core._check_writable(), _block_list(blocks)) for core, blocks in appends]
    states = {id(state): state for _, state, _ in work}
    if len(states) < len(work):
        raise InvalidArgumentError("append_together: each core may appear once")
    if len({id(state.storage.store) for state in states.values()}) > 1:
        raise InvalidArgumentError("append_together: the cores must share one store")
    await trio.lowlevel.checkpoint()  # one pause, as any trio call makes; the free locks add none
    async with AsyncExitStack() as locks:
        for key in sorted(states):  # one order for every caller: no deadlock between two
            await locks.enter_async_context(held(states[key].lock))
        for core, _, _ in work:
            core._check_open()
        todo = [(state, batch) for _, state, batch in work if batch]
        if todo:
            logged = logged or any(state.replicator is not None for state, _ in todo)
            store = todo[0][0].storage.store
            starts = [state.length for state, _ in todo]

            def commit() -> list[_Change]:
                shared: list[Change] = []
                txs = [state.storage.write(logged, shared) for state, _ in todo]
                changes = [state.append_into(tx, batch) for tx, (state, batch) in zip(txs, todo)]
                txs[0].flush()  # the list they all share: one commit
                return changes

            # Off the event loop: a big batch, and a logged one that first writes earlier
            # unlogged ones out of the memtables (~100 ms for 64 MiB).
            if sum(len(b) for _, batch in todo for b in batch) > THREAD_BYTES or (logged and store.unlogged):
                changes = await trio.to_thread.run_sync(commit)
            else:
                changes = commit()
            for (state, _), start, change in zip(todo, starts, changes):
                state.apply_change(change, (start, change.length))
        return [(core.state.length, core.byte_length) for core, _, _ in work]


def _block_list(blocks: bytes | bytearray | memoryview | Iterable[bytes]) -> list[bytes]:
    """One block or a list of blocks, as a list; InvalidArgumentError for anything else."""
    if isinstance(blocks, (bytes, bytearray, memoryview)):
        return [bytes(blocks)]
    batch = list(blocks)
    for b in batch:
        if not isinstance(b, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(f"blocks must be bytes, got {type(b).__name__}")
    return batch


__all__ = ["THREAD_BYTES", "CoreState", "Head", "Hypercore", "append_together", "open_core_state"]
