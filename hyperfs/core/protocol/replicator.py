"""Hypercore replication: the `Peer` of hypercore `lib/replicator.js` over Protomux, trio-native.

One `Replicator` serves a set of cores (a Corestore's, or a single core's) over any number of
connections (`await replicator.replicate(stream)`); each (connection, core) pair is a `Peer` on
one `hypercore/alpha` channel whose id is the core's discovery key (wire.md §4-§5).

What a Peer does (wire.md §4.6): checks the remote capability; sends `sync` (echoing the remote's
length) and announces what we have with `range`; answers `want` with `range`s; answers every
request exactly once with a proof (`data`) or `noData`; asks for upgrades when the remote is
ahead, and for the blocks that `get()`/`download()` want, pipelined with at most
`MAX_INFLIGHT` requests per peer; pushes `range` + `sync` to every peer on local appends.

Safety: a received block is stored (`core.verify_and_apply`) only after `proof.verify_proof` checked
it against a signed root. A wrong capability, a bad proof or signature, an answer we did not ask
for, a malformed message or a peer that stops answering drops the whole connection with a logged reason
and stores nothing from it; other connections keep working.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Container, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from hyperfs.core import caps
from hyperfs.core import flat_tree as ft
from hyperfs.core.encoding import TreeNode
from hyperfs.core.manifest import decode_manifest, encode_manifest, manifest_hash
from hyperfs.core.proof import VerifiedProof, generate_proof, verify_proof
from hyperfs.core.protocol import messages as m
from hyperfs.core.protocol.keys import noise_key_pair
from hyperfs.core.protocol.protomux import Channel, Mux
from hyperfs.core.protocol.secret_stream import SecretStream
from hyperfs.core.verifier import verify_head
from hyperfs.errors import (
    DecodingError,
    HyperfsError,
    PeerClosedError,
    ProofRequestError,
    ProtocolError,
    RequestTimeoutError,
    SessionClosedError,
    VerificationError,
)

log = logging.getLogger(__name__)

MAX_INFLIGHT = 256  # our requests outstanding on one peer (16 MiB of 64 KiB blocks)
MAX_QUEUED = 2048  # a peer's requests waiting for our answer before we drop it
SERVE_BATCH = 32  # requests answered per worker-thread hop
VERIFY_BATCH = 32  # received block proofs verified and stored per worker-thread hop
REQUEST_TIMEOUT = 30.0  # seconds a peer with our requests in flight may go without answering one
# Seconds a block request may go unanswered before another peer that has the block is asked
# too (longer for a peer whose answers usually take longer, see `Peer.overdue`).
OVERDUE_AFTER = 3.0
WANT_BATCH = 2097152  # JS asks in spans of this many blocks
MAX_ANNOUNCE = 1024  # range messages answering one want
MAX_REMOTE_RUNS = 1 << 16  # separate runs of blocks a peer may announce (bounds our memory)
MAX_KNOWN_NODES = 1 << 16  # trusted tree nodes cached per core (about 6 MiB)


class _Signal:
    """Wakes every task waiting for 'something changed' (trio has no reusable event)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def wake(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class Ranges:
    """A set of block indexes as sorted disjoint [start, end) runs (what a peer announced)."""

    __slots__ = ("starts", "ends")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        i = bisect.bisect_left(self.ends, start)
        j = bisect.bisect_right(self.starts, end)
        if i < j:
            start = min(start, self.starts[i])
            end = max(end, self.ends[j - 1])
        self.starts[i:j] = [start]
        self.ends[i:j] = [end]

    def remove(self, start: int, end: int) -> None:
        if start >= end:
            return
        i = bisect.bisect_right(self.ends, start)
        j = bisect.bisect_left(self.starts, end)
        keep_s: list[int] = []
        keep_e: list[int] = []
        if i < j:
            if self.starts[i] < start:
                keep_s.append(self.starts[i])
                keep_e.append(start)
            if self.ends[j - 1] > end:
                keep_s.append(end)
                keep_e.append(self.ends[j - 1])
        self.starts[i:j] = keep_s
        self.ends[i:j] = keep_e

    def __contains__(self, index: int) -> bool:
        i = bisect.bisect_right(self.starts, index) - 1
        return i >= 0 and index < self.ends[i]

    def clip(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The runs inside [start, end), in order."""
        i = bisect.bisect_right(self.ends, start)
        while i < len(self.starts) and self.starts[i] < end:
            yield max(start, self.starts[i]), min(end, self.ends[i])
            i += 1


@dataclass
class Download:
    """A range a caller wants stored locally; `done` counts blocks stored so far."""

    start: int
    end: int
    cursor: int = 0
    done: int = 0
    finished: trio.Event = field(default_factory=trio.Event)


class CoreReplication:
    """One core's replication state shared by all its peers: what is wanted, what is in flight."""

    def __init__(self, replicator: Replicator, core: Any) -> None:
        self.replicator = replicator
        self.core = core
        self.peers: list[Peer] = []
        self.wanted: set[int] = set()
        # Wanted blocks no connected peer has, by when they were parked: out of `wanted`, so
        # the fetch loops stop going through them; back once a peer announces one (`unpark`),
        # dropped once no reader waits for them (`lapse`).
        self.parked: dict[int, float] = {}
        self.unannounced: list[int] = []  # blocks stored since peers were last told
        self.downloads: list[Download] = []
        self.inflight: dict[int, int] = {}  # block index -> how many peers it is asked of
        self.changed = _Signal()  # new data stored, new peer info, new wants
        self.roots: list[TreeNode] = []
        self.roots_head = (-1, -1)  # (fork, length) the roots are for
        self.known: dict[int, TreeNode] = {}  # trusted tree nodes we stored lately (a cache)
        self.known_fork = 0

    # --- what to fetch ---------------------------------------------------------------------------

    def candidates(self, peer: Peer) -> Iterator[int]:
        """Missing blocks below our length that someone wants and `peer` has, wanted ones first,
        that are not asked of another peer already, or only of peers overdue with them. Wants
        met meanwhile are dropped on the way, and those no peer has are parked."""
        core = self.core
        length = core.length
        remote_has = peer.remote_has
        now = trio.current_time()
        for index in sorted(self.wanted):
            if core.has_local(index):
                self.wanted.discard(index)
            elif index in remote_has:
                if index < length and self._askable(index, peer, now):
                    yield index
            elif not any(index in p.remote_has for p in self.peers):
                self.wanted.discard(index)
                self.parked[index] = now
        for dl in self.downloads:
            end = min(dl.end, length)
            while dl.cursor < end and core.has_local(dl.cursor):
                dl.cursor += 1
            # Only what the remote announced: a big download from a sparse peer stays cheap.
            for start, stop in remote_has.clip(dl.cursor, end):
                for index in range(start, stop):
                    if not core.has_local(index) and self._askable(index, peer, now):
                        yield index

    def _askable(self, index: int, peer: Peer, now: float) -> bool:
        if index not in self.inflight:
            return True
        # A peer that went silent, or lost one request, would otherwise hold up every reader
        # of the block until it is dropped (REQUEST_TIMEOUT), or forever if it answers others.
        if index in peer.asked:
            return False
        return all(p.overdue(p.asked[index], now) for p in self.peers if index in p.asked)

    def asking(self, index: int) -> None:
        """Block `index` is being asked of one more peer."""
        self.inflight[index] = self.inflight.get(index, 0) + 1

    def settled(self, index: int) -> None:
        """One peer's request for block `index` is settled (stored, refused or dropped)."""
        left = self.inflight.get(index, 0) - 1
        if left > 0:
            self.inflight[index] = left
        else:
            self.inflight.pop(index, None)

    def unpark(self, has: Ranges, start: int, end: int) -> None:
        """A peer announced blocks [start, end), which it has where `has` says: the parked
        wants among them are wanted again."""
        parked = self.parked
        if not parked:
            return
        span = range(start, end) if end - start < len(parked) else [i for i in parked if start <= i < end]
        back = [i for i in span if i in parked and i in has]
        for index in back:
            del parked[index]
        self.wanted.update(back)

    def lapse(self, now: float) -> None:
        """Drop the wants parked for `request_timeout` seconds that no reader waits for: read-ahead
        asks for blocks before anyone reads them, and those no peer had stayed wanted for good
        (58,000 of them made 2,000 reads take 30 s, not 1.6: each fetch loop pass went
        through them all). Those a reader still waits for are looked at again a timeout later."""
        cutoff = now - self.replicator.request_timeout
        parked = self.parked
        waiting = self.core.state.waiting_for
        while parked:
            index, since = next(iter(parked.items()))
            if since > cutoff:
                return
            del parked[index]
            if waiting(index):
                parked[index] = now

    def stored(self, index: int) -> None:
        self.wanted.discard(index)
        self.parked.pop(index, None)
        self.unannounced.append(index)
        for dl in self.downloads:
            if dl.start <= index < dl.end:
                dl.done += 1
        self.settle_downloads()

    def settle_downloads(self) -> None:
        core = self.core
        for dl in list(self.downloads):
            while dl.cursor < dl.end and core.has_local(dl.cursor):
                dl.cursor += 1
            if dl.cursor >= dl.end:
                dl.finished.set()
                self.downloads.remove(dl)

    async def current_roots(self) -> list[TreeNode]:
        """Our roots at our current head (read once per head, in a worker thread)."""
        head = (self.core.fork, self.core.length)
        if self.roots_head != head:
            indexes = ft.full_roots(2 * head[1])
            nodes = await trio.to_thread.run_sync(self.core.read_nodes_sync, indexes)
            self.roots = [nodes[i] for i in indexes]
            self.roots_head = head
        return self.roots

    def remember(self, proof: VerifiedProof) -> None:
        """Cache the nodes of a stored proof: later requests climb less, verification reads less."""
        if proof.fork != self.known_fork or len(self.known) > MAX_KNOWN_NODES:
            self.known.clear()
            self.known_fork = proof.fork
        for node in proof.nodes:
            self.known[node.index] = node

    def missing_nodes(self, index: int, promised: Container[int] = ()) -> tuple[int, int | None]:
        """How many levels a proof for block `index` must climb to reach a node we trust, and
        that node when it is only `promised` (a request in flight will prove it), else None.

        As JS `missingNodes`: stop at a node we have (cached or a root), and also at one an
        earlier request on the same peer will prove (JS asks for the whole climb instead): the
        answer then waits to be verified until that request is settled, and is asked for again
        if it failed (`Peer._next_batch`, `Peer._store`). A node missing from the cache only
        makes the proof a little longer, never wrong.
        """
        core = self.core
        head = 2 * core.length
        known = self.known if self.known_fork == core.fork else {}
        roots = ft.full_roots(head)
        node, climbed = 2 * index, 0
        while node not in known and node not in roots:
            if node in promised:
                return climbed, node
            node = ft.parent(node)
            if ft.right_span(node) >= head:
                break
            climbed += 1
        return climbed, None


def proven_by(index: int, levels: int) -> tuple[int, ...]:
    """The tree nodes a block proof of `levels` levels proves below its top: the block's leaf,
    its ancestors and their siblings."""
    node, out = 2 * index, []
    for _ in range(levels):
        out += (node, ft.sibling(node))
        node = ft.parent(node)
    return tuple(out)


class Replicator:
    """Replicates a set of cores over any number of connections.

    `add(core)` makes a core replicable (and sets `core.replicator`); `lookup` (async, by
    discovery key) lets remote opens attach cores we hold but have not added (Corestore).
    """

    def __init__(
        self,
        lookup: Callable[[bytes], Awaitable[Any | None]] | None = None,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        overdue_after: float = OVERDUE_AFTER,
    ) -> None:
        self.lookup = lookup
        self.request_timeout = request_timeout
        self.overdue_after = overdue_after
        self.cores: dict[bytes, CoreReplication] = {}
        self.connections: list[Connection] = []
        self._bytes_sent_closed = 0

    @property
    def bytes_sent(self) -> int:
        """Bytes sent to peers so far, over every connection (for status lines)."""
        return self._bytes_sent_closed + sum(c.stream.bytes_sent for c in self.connections)

    def add(self, core: Any) -> CoreReplication:
        """Replicate `core` (a session; a later session replaces one that was closed)."""
        state = self.cores.get(core.discovery_key)
        if state is None:
            state = self.cores[core.discovery_key] = CoreReplication(self, core)
            core.replicator = self
            # get() calls that started waiting before we were attached never called want().
            state.wanted.update(core.state.waiting_indexes())
            for conn in self.connections:
                conn.attach_soon(state)
        elif state.core.closed and not core.closed:
            state.core = core
        return state

    async def locate(self, core: Any, byte_offset: int, missing: int) -> None:
        """Ask peers, one after another until one answers with a proof, for the tree nodes that
        find `byte_offset` under the parent of node `missing` (a node we trust, so the proof
        hashes into it): a seek request, one round trip where fetching a block per tree level
        takes one each. Returns once the proof is stored, or no peer could send one (none with
        our head, or all answered noData)."""
        state = self.add(core)
        for peer in list(state.peers):
            if peer.can_locate() and await peer.locate(byte_offset, missing):
                return

    def want(self, core: Any, *indexes: int) -> None:
        """A reader waits for, or will soon read, these blocks of `core`: ask peers that have
        them (sync, non-blocking)."""
        state = self.add(core)
        for index in indexes:
            state.parked.pop(index, None)  # asked for again: looked at again
        state.wanted.update(indexes)
        state.changed.wake()

    async def update(self, core: Any, wait: bool = True, timeout: float = 0) -> bool:
        """Learn the connected peers' lengths and catch up with the longest one.

        With `wait`, first wait (up to `timeout` seconds, 0 = no limit) for at least one peer's
        sync. True if our length grew.
        """
        state = self.add(core)
        before = core.length
        with trio.move_on_after(timeout if timeout > 0 else math.inf):
            while True:
                peers = [p for p in state.peers if p.synced]
                if not peers and not wait:
                    break
                if peers and all(not p.ahead() for p in peers):
                    break
                await state.changed.wait()
        return core.length > before

    async def download(
        self, core: Any, start: int = 0, end: int | None = None, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Fetch blocks [start, end) (end None: up to the length after an update) from peers.

        `progress(done, total)` is called as blocks are stored.
        """
        state = self.add(core)
        if end is None:
            await self.update(core)
            end = core.length
        dl = Download(start, end, cursor=start)
        total = end - start
        for s, e in core.local_ranges(start):  # what is stored already, a run at a time
            if s >= end:
                break
            if s == dl.cursor:  # a run from `start` on: settle_downloads need not walk it
                dl.cursor = min(e, end)
            dl.done += min(e, end) - s
        state.downloads.append(dl)
        state.settle_downloads()
        state.changed.wake()
        while not dl.finished.is_set():
            if progress is not None:
                progress(dl.done, total)
            with trio.move_on_after(0.2):
                await dl.finished.wait()
        if progress is not None:
            progress(total, total)

    async def replicate(self, stream: SecretStream) -> Connection:
        """Replicate every core over `stream` until it closes; returns the finished Connection.

        A peer that breaks the protocol ends the connection; its `error` says why.
        """
        conn = Connection(self, stream)
        self.connections.append(conn)
        try:
            await conn.run()
        finally:
            self.connections.remove(conn)
            self._bytes_sent_closed += stream.bytes_sent
        return conn


class Connection:
    """One replication connection: a Protomux with a Peer per shared core."""

    def __init__(self, replicator: Replicator, stream: SecretStream) -> None:
        self.replicator = replicator
        self.stream = stream
        self.mux = Mux(stream)
        self.peers: dict[bytes, Peer] = {}
        self.error: str | None = None
        self._nursery: trio.Nursery | None = None

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.mux.pair(m.PROTOCOL, None, self._on_remote_open)
            nursery.start_soon(self._run_mux)
            self.start_soon(self._attach_all)

    async def _attach_all(self) -> None:
        # All our opens in one batch, as Corestore does.
        async with self.mux.corked():
            for state in list(self.replicator.cores.values()):
                await self.attach(state)

    async def _run_mux(self) -> None:
        try:
            await self.mux.run()
        except SessionClosedError:
            pass  # our core or store closed under a handler: a quiet end
        except (HyperfsError, trio.BrokenResourceError) as err:
            self._failed(err)
        finally:
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()

    def _failed(self, err: BaseException) -> None:
        if self.error is None:
            self.error = f"{type(err).__name__}: {err}"
            log.warning("dropping peer %s: %s", self.stream.remote_public_key.hex()[:16], self.error)

    async def fail(self, err: BaseException) -> None:
        """Drop this connection because the peer misbehaved (logged)."""
        self._failed(err)
        await self._end()

    async def _end(self) -> None:
        await self.mux.close()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def attach_soon(self, state: CoreReplication) -> None:
        if self._nursery is not None:
            self.start_soon(self.attach, state)

    async def attach(self, state: CoreReplication) -> Peer | None:
        """Open the channel for `state.core` (pairs with the remote's open if it is waiting)."""
        core = state.core
        dkey = core.discovery_key
        if dkey in self.peers:
            return self.peers[dkey]
        peer = Peer(self, state)
        channel = self.mux.create_channel(
            m.PROTOCOL,
            dkey,
            messages=peer.handlers(),
            on_open=peer.on_open,
            on_close=peer.on_close,
            aliases=("hypercore",),
        )
        if channel is None:
            return None
        peer.channel = channel
        self.peers[dkey] = peer
        capability = caps.replicate_capability(self.stream.is_initiator, core.key, self.stream.handshake_hash)
        await channel.open(m.Handshake(capability).encode())  # seeks: we answer seek requests
        return peer

    async def _on_remote_open(self, dkey: bytes | None) -> None:
        if dkey is None or len(dkey) != 32:
            return  # not a core: protomux rejects it
        state = self.replicator.cores.get(dkey)
        if state is None and self.replicator.lookup is not None:
            core = await self.replicator.lookup(dkey)
            if core is not None:
                state = self.replicator.add(core)
        if state is not None:
            await self.attach(state)

    def start_soon(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._guard, fn, *args)

    async def _guard(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        # A peer task that finds the peer misbehaving ends the whole connection.
        try:
            await fn(*args)
        except PeerClosedError:
            return  # the connection is ending; whoever ended it has said why
        except SessionClosedError:
            await self._end()  # our core or store closed: nothing left to replicate
        except (ProtocolError, VerificationError, DecodingError, RequestTimeoutError) as err:
            await self.fail(err)


@dataclass
class _Inflight:
    kind: str  # "block", "upgrade" or "seek"
    index: int
    sent: float
    request: m.Request
    seq: int = 0  # order sent on this peer (request ids are reused, these are not)
    proves: tuple[int, ...] = ()  # nodes its proof will prove, promised to later requests
    relies: tuple[int, int] | None = None  # (node, seq): the proof hashes to a node request seq promised
    settled: trio.Event | None = None  # set once answered and stored, refused, or the peer closed
    answered: bool = False  # the peer sent data for it


class _BatchSource:
    """A core's stored tree nodes and blocks for one batch of answers (a `proof.ProofSource`):
    each node is read once per batch, as proofs of nearby blocks share most of theirs."""

    __slots__ = ("core", "nodes")

    def __init__(self, core: Any) -> None:
        self.core = core
        self.nodes: dict[int, TreeNode] = {}

    def read_nodes_sync(self, indexes: list[int]) -> dict[int, TreeNode]:
        nodes = self.nodes
        missing = [i for i in indexes if i not in nodes]
        if missing:
            nodes.update(self.core.read_nodes_sync(missing))
        return {i: nodes[i] for i in indexes if i in nodes}

    def read_block_sync(self, index: int) -> bytes | None:
        return self.core.read_block_sync(index)


class Peer:
    """One core on one connection: the hypercore channel's state machine (wire.md §4.6)."""

    def __init__(self, conn: Connection, state: CoreReplication) -> None:
        self.conn = conn
        self.state = state
        self.discovery_key: bytes = state.core.discovery_key
        self.channel: Channel | None = None
        self.synced = False
        self.remote_fork = 0
        self.remote_length = 0
        self.remote_has = Ranges()
        self.remote_seeks = False  # the remote answers seek requests (its handshake said so)
        self.inflight: dict[int, _Inflight] = {}
        self.asked: dict[int, _Inflight] = {}  # block index -> its request in flight here, oldest first
        self.latency = 0.0  # how long its answers take (a moving average), 0 before the first
        self.promised: dict[int, int] = {}  # node -> seq of the block request in flight proving it
        self.unsettled: set[int] = set()  # seqs of block requests not yet answered and stored
        self.seq = 0
        self.queue: deque[m.Request] = deque()
        self.queued = _Signal()
        self.received: deque[tuple[_Inflight, m.Data]] = deque()
        self.arrived = _Signal()
        self.upgrading = False
        self.seeks: deque[_Inflight] = deque()  # seek requests waiting for `fetch` to send them
        self.answered = -math.inf  # when it last answered one of our requests (trio clock)
        self.announced = 0  # contiguous length we announced with `range`
        self.closed = False

    @property
    def core(self) -> Any:
        return self.state.core  # the state's session, which a newer one may replace

    def handlers(self) -> list[Callable[[Channel, memoryview], Awaitable[None]] | None]:
        """Protomux handlers by message type. Cancel, unwant and extension need nothing: we
        answer requests in order and quickly, keep no wants, and register no extensions."""
        table: dict[int, Callable[[Any], Awaitable[None]]] = {
            m.Sync.TYPE: self.on_sync,
            m.Request.TYPE: self.on_request,
            m.Data.TYPE: self.on_data,
            m.NoData.TYPE: self.on_no_data,
            m.Want.TYPE: self.on_want,
            m.Bitfield.TYPE: self.on_bitfield,
            m.Range.TYPE: self.on_range,
        }

        def decoding(msg_type: int, method: Callable[[Any], Awaitable[None]]) -> Callable[..., Awaitable[None]]:
            async def on_message(channel: Channel, payload: memoryview) -> None:
                await method(m.decode(msg_type, payload))

            return on_message

        return [decoding(t, table[t]) if t in table else None for t in range(len(m.MESSAGE_TYPES))]

    async def send(self, msg: m.Message) -> None:
        if self.channel is not None:
            await self.channel.send(msg.TYPE, m.encode(msg))

    # --- open / close ----------------------------------------------------------------------------

    async def on_open(self, channel: Channel, handshake: memoryview) -> None:
        try:
            remote = m.Handshake.decode(bytes(handshake))
        except DecodingError as err:
            raise ProtocolError(f"bad hypercore channel handshake: {err}") from None
        self.remote_seeks = remote.seeks
        stream = self.conn.stream
        expected = caps.replicate_capability(not stream.is_initiator, self.core.key, stream.handshake_hash)
        if remote.capability != expected:
            raise ProtocolError("remote sent a wrong replication capability")
        self.state.peers.append(self)
        mux = self.conn.mux
        async with mux.corked():
            await self.send_sync()
            await self.announce_ranges()
            if not self.core.writable:
                await self.send(m.Want(0, WANT_BATCH))
        self.conn.start_soon(self.serve)
        self.conn.start_soon(self.fetch)
        self.conn.start_soon(self.store_loop)
        self.conn.start_soon(self.watchdog)
        self.conn.start_soon(self.follow)

    async def follow(self) -> None:
        """Announce our new length after every append, upgrade or truncation of the core."""
        changes = self.core.on_append()
        async with changes:
            async for _ in changes:
                if self.closed:
                    return
                await self.announce()
                self.state.changed.wake()

    def on_close(self, channel: Channel, is_remote: bool) -> None:
        self.closed = True
        if self in self.state.peers:
            self.state.peers.remove(self)
        self.conn.peers.pop(self.discovery_key, None)
        for item in [*self.inflight.values(), *(item for item, _ in self.received), *self.seeks]:
            self._done(item)
        self.inflight.clear()
        self.seeks.clear()
        self.promised.clear()
        self.unsettled.clear()
        self.received.clear()
        self.queued.wake()
        self.arrived.wake()
        self.state.changed.wake()

    # --- announcing ------------------------------------------------------------------------------

    async def send_sync(self) -> None:
        core = self.core
        remote_length = self.remote_length if self.remote_fork == core.fork else 0
        can_upgrade = self.remote_length == 0 or (self.remote_length < core.length and self.remote_fork == core.fork)
        await self.send(
            m.Sync(
                fork=core.fork,
                length=core.length,
                remote_length=remote_length,
                can_upgrade=can_upgrade,
                uploading=True,
                downloading=not core.writable,
                has_manifest=core.manifest is not None,
            )
        )

    async def announce_ranges(self, blocks: list[int] | None = None) -> None:
        """Tell the remote our contiguous length if it grew, and which of `blocks` (stored
        lately) lie past it, as JS announces each block it gets: a sparse peer's readers
        would otherwise never ask it for blocks it got out of order. Not those the remote has:
        a random reader's scattered blocks would reach the seeder it read them from, which
        has them all, and which drops a peer past MAX_REMOTE_RUNS separate runs."""
        contiguous = self.core.contiguous_length
        if contiguous > self.announced:
            self.announced = contiguous
            await self.send(m.Range(0, contiguous))
        past = Ranges()
        for index in blocks or ():
            if index >= contiguous and index not in self.remote_has:
                past.add(index, index + 1)
        for start, end in zip(past.starts, past.ends):
            await self.send(m.Range(start, end - start))

    def announce_ranges_soon(self, blocks: list[int]) -> None:
        """`announce_ranges` in this peer's own connection. Sent from another connection's task,
        it broke this connection when that one was cancelled mid-send (its peer leaving): the
        stream is closed rather than left with half a frame on the wire."""
        if not self.closed:
            self.conn.start_soon(self.announce_ranges, blocks)

    async def announce(self) -> None:
        """After our length changed: `range` then `sync`, as JS does on append."""
        if self.closed or self.channel is None or not self.channel.opened:
            return
        async with self.conn.mux.corked():
            await self.announce_ranges()
            await self.send_sync()

    # --- incoming --------------------------------------------------------------------------------

    async def on_sync(self, msg: m.Sync) -> None:
        self.synced = True
        self.remote_fork = msg.fork
        self.remote_length = msg.length
        core = self.core
        # A reader behind us only asks for an upgrade once our sync echoes its length (JS rule).
        if msg.fork == core.fork and msg.length < core.length:
            await self.send_sync()
        self.state.changed.wake()

    async def on_range(self, msg: m.Range) -> None:
        if msg.drop:
            self.remote_has.remove(msg.start, msg.start + msg.length)
        else:
            self.remote_has.add(msg.start, msg.start + msg.length)
            self._check_ranges()
            self.state.unpark(self.remote_has, msg.start, msg.start + msg.length)
        self.state.changed.wake()

    async def on_bitfield(self, msg: m.Bitfield) -> None:
        if msg.start % 32:
            return  # JS ignores unaligned bitfields
        has = self.remote_has
        has.remove(msg.start, msg.start + 32 * len(msg.bitfield))
        for w, word in enumerate(msg.bitfield):
            base = msg.start + 32 * w
            while word:  # one run of set bits at a time
                low = (word & -word).bit_length() - 1
                run = (~(word >> low) & -~(word >> low)).bit_length() - 1
                has.add(base + low, base + low + run)
                word &= ~(((1 << run) - 1) << low)
            self._check_ranges()
        self.state.unpark(has, msg.start, msg.start + 32 * len(msg.bitfield))
        self.state.changed.wake()

    def _check_ranges(self) -> None:
        if len(self.remote_has.starts) > MAX_REMOTE_RUNS:
            raise ProtocolError(f"peer announced more than {MAX_REMOTE_RUNS} separate runs of blocks")

    async def on_want(self, msg: m.Want) -> None:
        end = msg.start + msg.length
        sent = 0
        async with self.conn.mux.corked():
            for start, stop in self.core.local_ranges(msg.start):
                if start >= end or sent >= MAX_ANNOUNCE:
                    break
                await self.send(m.Range(start, stop - start))
                sent += 1

    async def on_request(self, msg: m.Request) -> None:
        if len(self.queue) >= MAX_QUEUED:
            raise ProtocolError(f"peer has more than {MAX_QUEUED} requests waiting for answers")
        self.queue.append(msg)
        self.queued.wake()

    async def on_no_data(self, msg: m.NoData) -> None:
        item = self.inflight.pop(msg.request, None)
        if item is None:
            raise ProtocolError(f"noData for request {msg.request}, which we did not send")
        self._answered(item)
        self._done(item)
        if item.kind == "block":
            self.remote_has.remove(item.index, item.index + 1)
        self.state.changed.wake()
        self.arrived.wake()  # a received proof may wait for this request to settle

    async def on_data(self, msg: m.Data) -> None:
        item = self.inflight.get(msg.request)
        if item is None:
            raise ProtocolError(f"data for request {msg.request}, which we did not send")
        req = item.request
        if (
            (msg.block is None) != (req.block is None)
            or (msg.block and msg.block.index != req.block.index)
            or (msg.hash is None) != (req.hash is None)
            or (msg.hash and msg.hash.index != req.hash.index)
            or (msg.seek and (req.seek is None or msg.seek.bytes != req.seek.bytes))
        ):
            raise ProtocolError(f"data does not answer request {msg.request}")
        if msg.upgrade is not None and req.upgrade is None:
            raise ProtocolError("data carries an upgrade we did not ask for")
        del self.inflight[msg.request]
        item.answered = True
        self._answered(item)
        # Verify and store in `store_loop`, so receiving goes on meanwhile. The queue is bounded
        # by MAX_INFLIGHT: every entry answers one of our requests.
        self.received.append((item, msg))
        self.arrived.wake()

    def _answered(self, item: _Inflight) -> None:
        now = self.answered = trio.current_time()
        took = now - item.sent
        self.latency = took if self.latency == 0 else 0.8 * self.latency + 0.2 * took

    def overdue(self, item: _Inflight, now: float) -> bool:
        """May block request `item`, in flight here, be asked of another peer too? Yes once it
        has waited `overdue_after` seconds and the peer has answered nothing for as long (gone
        silent), or it has waited four of the peer's usual answer times too (lost, or stuck
        behind others far longer than usual)."""
        after = self.conn.replicator.overdue_after
        waited = now - item.sent
        return not item.answered and waited > after and (now - self.answered > after or waited > 4 * self.latency)

    async def store_loop(self) -> None:
        """Verify and store received proofs, in order; block proofs several per thread hop."""
        while not self.closed:
            if not self.received:
                await self.arrived.wait()
                continue
            batch = self._next_batch()
            if not batch:
                await self.arrived.wait()  # for the answers the queued proofs hash into
                continue
            try:
                # Blocks stay marked in flight until stored, or other tasks would ask again.
                await self._store(batch)
            finally:
                for item, _ in batch:
                    self._done(item)
                self.state.changed.wake()

    def _next_batch(self) -> list[tuple[_Inflight, m.Data]]:
        """The received proofs to verify together: a lone one with an upgrade, or up to
        VERIFY_BATCH without (they all verify against the same head), in arrival order, except
        that a proof hashing to a node promised by a request still unsettled waits for it (a
        peer may answer out of order). Empty when all that arrived waits so."""
        received = self.received
        batch: list[tuple[_Inflight, m.Data]] = []
        waiting: list[tuple[_Inflight, m.Data]] = []
        taken: set[int] = set()
        while received and len(batch) < VERIFY_BATCH:
            item, msg = received[0]
            if msg.upgrade is not None and (batch or waiting) or batch and batch[0][1].upgrade is not None:
                if not batch:  # stuck behind an upgrade: verify it anyway (_store asks again)
                    batch.append(waiting.pop(0))
                break  # an upgrade is verified alone and after what arrived before it
            received.popleft()
            if item.relies is not None and item.relies[1] in self.unsettled and item.relies[1] not in taken:
                waiting.append((item, msg))
                continue
            batch.append((item, msg))
            taken.add(item.seq)
        received.extendleft(reversed(waiting))
        return batch

    async def _store(self, batch: list[tuple[_Inflight, m.Data]]) -> None:
        """Verify proofs against our signed head, then store them (nothing if one fails).

        Only a lone proof may carry an upgrade (store_loop batches the others). A proof whose
        promised top node is still untrusted (the request promising it failed) is not stored:
        the fetch loop asks for it again.
        """
        core = self.core
        state = self.state
        length, fork, key = core.length, core.fork, core.key
        msgs = [msg for _, msg in batch]
        first = msgs[0]
        if first.upgrade is not None and first.upgrade.start != length and first.fork == fork:
            return  # stale: our length moved meanwhile; the fetch loop asks again
        manifest = core.manifest
        learnt = None
        if manifest is None and first.manifest is not None:
            try:
                learnt = decode_manifest(first.manifest)
            except DecodingError as err:
                raise VerificationError(f"peer sent a bad manifest: {err}") from None
            if manifest_hash(learnt) != key:
                raise VerificationError("peer sent a manifest that does not hash to the core key")
            manifest = learnt
        if first.upgrade is not None and manifest is None:
            raise VerificationError("upgrade without a manifest to check its signature")
        roots = await state.current_roots()
        if (core.length, core.fork) != (length, fork):
            return  # changed while reading roots; ask again

        proven: dict[int, TreeNode] = {}  # nodes of the proofs verified so far in this batch

        def stored_node(index: int) -> TreeNode | None:
            # Worker thread: dict.get is atomic; a cache of another fork is not asked.
            node = proven.get(index) or (state.known.get(index) if state.known_fork == fork else None)
            return node or core.read_nodes_sync([index]).get(index)

        root_indexes = {root.index for root in roots}

        def check(root_hash: bytes, new_length: int, new_fork: int, signature: bytes) -> bool:
            return verify_head(manifest, key, root_hash, new_length, new_fork, signature)

        def verify_all() -> list[VerifiedProof]:
            # Runs under the core's lock, so the head cannot move between this check and the store.
            if core.fork != fork or (first.upgrade is not None and core.length != length):
                return []  # another peer moved the head meanwhile: these proofs are for the old one
            proofs = []
            for item, msg in batch:
                if msg.upgrade is None and msg.block is not None and core.has_local(msg.block.index):
                    continue  # another peer's answer stored it first (both were asked: `overdue`)
                top = item.relies[0] if item.relies is not None else None
                if top is not None and top not in root_indexes and stored_node(top) is None:
                    continue  # the proof promising its top node failed: this one is asked for again
                verified = verify_proof(
                    msg, length=length, fork=fork, roots=roots, stored_node=stored_node, check_signature=check
                )
                proven.update((node.index, node) for node in verified.nodes)
                proofs.append(verified)
            if learnt is not None and proofs:
                proofs[0] = replace(proofs[0], manifest=learnt)
            return proofs

        for verified in await core.verify_and_apply(verify_all):
            state.remember(verified)
            if verified.block_index is not None:
                state.stored(verified.block_index)
        if len(state.inflight) <= len(msgs):
            # Caught up for now: tell peers what we can serve (seeders rely on it).
            blocks, state.unannounced = state.unannounced, []
            for peer in list(state.peers):
                peer.announce_ranges_soon(blocks)

    def _done(self, item: _Inflight) -> None:
        if item.kind == "upgrade":
            self.upgrading = False
        elif item.kind == "block":
            if self.asked.get(item.index) is item:
                del self.asked[item.index]
                self.state.settled(item.index)
            self.unsettled.discard(item.seq)
            for node in item.proves:
                if self.promised.get(node) == item.seq:
                    del self.promised[node]
        if item.settled is not None:
            item.settled.set()

    # --- serving ---------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Answer the peer's requests in order, several per worker-thread hop."""
        while not self.closed:
            if not self.queue:
                await self.queued.wait()
                continue
            batch = [self.queue.popleft() for _ in range(min(SERVE_BATCH, len(self.queue)))]
            head = self.core.head  # one head for the batch, so proofs and signature agree
            answers = await trio.to_thread.run_sync(self._answer_all, batch, head)
            if self.core.fork != head.fork:
                # Truncated while we read: the nodes may be from the new tree, so answer nothing.
                answers = [m.NoData(req.id, m.NOT_AVAILABLE) for req in batch]
            async with self.conn.mux.corked():
                for answer in answers:
                    await self.send(answer)

    def _answer_all(self, requests: list[m.Request], head: Any) -> list[m.Message]:
        source = _BatchSource(self.core)
        return [self._answer(req, head, source) for req in requests]

    def _answer(self, req: m.Request, head: Any, source: _BatchSource) -> m.Message:
        core = self.core
        if req.fork != head.fork:
            return m.NoData(req.id, m.NOT_AVAILABLE)
        if req.block is not None and not core.has_local(req.block.index):
            return m.NoData(req.id, m.NOT_AVAILABLE)
        if req.block is None and req.hash is None and req.upgrade is None:
            if req.manifest and core.manifest is not None:
                return m.Data(request=req.id, fork=head.fork, manifest=encode_manifest(core.manifest))
            return m.NoData(req.id, m.NOT_AVAILABLE)
        try:
            data = generate_proof(source, req, head.length, head.fork, head.signature)
        except ProofRequestError:
            return m.NoData(req.id, m.INVALID_REQUEST)
        if req.manifest and core.manifest is not None:
            data.manifest = encode_manifest(core.manifest)
        return data

    # --- fetching --------------------------------------------------------------------------------

    def _next_id(self) -> int:
        rid = 1
        while rid in self.inflight:
            rid += 1
        return rid

    async def _request(self, item: _Inflight) -> None:
        self.inflight[item.request.id] = item
        if item.kind == "block":
            self.asked[item.index] = item
            self.state.asking(item.index)
            self.seq += 1
            item.seq = self.seq
            self.unsettled.add(item.seq)
            self.promised.update(dict.fromkeys(item.proves, item.seq))
        await self.send(item.request)

    async def fetch(self) -> None:
        """Send seek requests, and keep up to MAX_INFLIGHT requests going for upgrades and wanted blocks."""
        state = self.state
        while not self.closed:
            sent = False
            async with self.conn.mux.corked():
                while self.seeks:
                    item = self.seeks.popleft()
                    item.request.id = self._next_id()
                    item.sent = trio.current_time()
                    await self._request(item)
                    sent = True
                if self._should_upgrade():
                    self.upgrading = True
                    core = self.core
                    same = self.remote_fork == core.fork
                    start = core.length if same else 0
                    req = m.Request(
                        id=self._next_id(),
                        fork=self.remote_fork,
                        upgrade=m.UpgradeRequest(start, self.remote_length - start),
                        manifest=core.manifest is None,
                    )
                    await self._request(_Inflight("upgrade", -1, trio.current_time(), req))
                    sent = True
                if not self.upgrading or self.remote_fork == self.core.fork:
                    sent = await self._request_blocks() or sent
            if not sent:  # nothing was sent, so nothing awaited since the checks: no wake-up missed
                await state.changed.wait()

    def _should_upgrade(self) -> bool:
        if self.upgrading or len(self.inflight) >= MAX_INFLIGHT:
            return False
        return self.ahead()

    def ahead(self) -> bool:
        """The remote has a head we should upgrade to (longer, or a newer fork)."""
        core = self.core
        if not self.synced:
            return False
        if self.remote_fork == core.fork:
            return self.remote_length > core.length
        return self.remote_fork > core.fork and self.remote_length > 0

    def can_locate(self) -> bool:
        """The remote answers seek requests, and its tree holds ours (same fork, as long)."""
        core = self.core
        return (
            self.synced and self.remote_seeks and not self.closed
            and self.remote_fork == core.fork and self.remote_length >= core.length
        )

    async def locate(self, byte_offset: int, missing: int) -> bool:
        """`Replicator.locate` on this peer: True if it answered with a proof.

        The request is for the hash of the first leaf under `missing`, climbing to its parent,
        with the seek: the proof brings that path and its siblings, and the responder splices
        the path down to the byte's leaf in where it hangs off (JS `blockAndSeekProof`). So
        the walk down from the parent finds every node it reads, wherever under it the byte
        is; only a byte where a subtree ends leaves the next one's left edge for a second
        round."""
        core = self.core
        req = m.Request(
            id=0,  # given when `fetch` sends it
            fork=core.fork,
            hash=m.IndexNodes(ft.left_span(missing), ft.depth(missing) + 1),
            seek=m.SeekRequest(byte_offset, core.padding),
        )
        item = _Inflight("seek", -1, trio.current_time(), req, settled=trio.Event())
        # The connection's task sends it: a send cancelled halfway (our caller's timeout)
        # would end the connection.
        self.seeks.append(item)
        self.state.changed.wake()
        await item.settled.wait()
        return item.answered

    async def _request_blocks(self) -> bool:
        state = self.state
        if self.remote_fork != self.core.fork or len(self.inflight) >= MAX_INFLIGHT:
            return False
        sent = False
        for index in state.candidates(self):
            if len(self.inflight) >= MAX_INFLIGHT:
                break
            levels, top = state.missing_nodes(index, self.promised)
            req = m.Request(id=self._next_id(), fork=self.core.fork, block=m.IndexNodes(index, levels))
            relies = None if top is None else (top, self.promised[top])
            await self._request(_Inflight("block", index, trio.current_time(), req, 0, proven_by(index, levels), relies))
            sent = True
        return sent

    async def watchdog(self) -> None:
        """Drop the peer when it answers none of our requests for `request_timeout` seconds,
        and wake the other peers' fetch loops while it has block requests `overdue` for blocks
        still missing (one another peer sent is left in flight here until it is answered).

        Counted from its last answer, not from each request: on a slow link the last of
        MAX_INFLIGHT requests may wait longer than that behind the others' blocks, from a peer
        that keeps answering."""
        replicator = self.conn.replicator
        timeout = replicator.request_timeout
        while not self.closed:
            await trio.sleep(min(1.0, timeout / 4, replicator.overdue_after / 4))
            now = trio.current_time()
            core = self.core
            self.state.lapse(now)
            if len(self.state.peers) > 1 and any(
                self.overdue(item, now) and not core.has_local(item.index) for item in self.asked.values()
            ):
                self.state.changed.wake()
            if self.inflight:
                oldest = min(self.inflight.values(), key=lambda item: item.sent)
                if now - max(oldest.sent, self.answered) > timeout:
                    raise RequestTimeoutError(f"peer did not answer request {oldest.request.id} within {timeout}s")


async def store_replicator(store: Any) -> Replicator:
    """The one Replicator of a Corestore: its open cores, cores it opens later (Corestore.get
    adds them), and any core it holds that a remote opens a channel for."""
    root = store.root
    if root.replicator is None:

        async def lookup(discovery_key: bytes) -> Any | None:
            try:
                return await store.get(discovery_key=discovery_key)
            except HyperfsError:  # not in the store (or the store is closing): reject it
                return None

        root.replicator = Replicator(lookup)
        for discovery_key, core_state in list(root.cores.items()):
            if not core_state.closed:
                root.replicator.add(await store.get(discovery_key=discovery_key))
    return root.replicator


async def replicate_store(store: Any, transport: trio.abc.Stream, is_initiator: bool) -> Connection:
    """`Corestore.replicate`: a Noise connection on `transport` (with the store's stable key
    pair) replicating every core both sides have, until it closes."""
    replicator = await store_replicator(store)
    secret = await SecretStream.connect(transport, is_initiator, noise_key_pair(store))
    return await replicator.replicate(secret)
