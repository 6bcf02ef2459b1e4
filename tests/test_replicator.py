"""Replication between hyperfs peers: real RocksDB cores, real TCP on 127.0.0.1, real Noise."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

from hyperfs.core.corestore import Corestore
from hyperfs.core.hypercore import Hypercore
from hyperfs.core.protocol.replicator import Connection, Ranges, Replicator
from hyperfs.core.protocol.secret_stream import SecretStream

TEST_TIMEOUT = 30


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async test body under trio with a deadline (a hang fails instead of blocking CI)."""

    async def main() -> Any:
        with trio.fail_after(TEST_TIMEOUT):
            return await fn()

    return trio.run(main)


async def open_core(path: Path, key: bytes | None = None) -> Hypercore:
    core = Hypercore(str(path), key=key)
    await core.ready()
    return core


async def _replicate(target: Replicator | Corestore, stream: trio.SocketStream, is_initiator: bool) -> Connection:
    """Replicate on a TCP stream: a Replicator over a fresh Noise session, or a whole Corestore."""
    if isinstance(target, Corestore):
        return await target.replicate(stream, is_initiator)
    return await target.replicate(await SecretStream.connect(stream, is_initiator))


@asynccontextmanager
async def serving(target: Replicator | Corestore) -> AsyncIterator[tuple[int, list[Connection]]]:
    """Listen on 127.0.0.1 (Noise responder per connection); yields (port, finished connections)."""
    done: list[Connection] = []
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

        async def handle(stream: trio.SocketStream) -> None:
            done.append(await _replicate(target, stream, False))

        nursery.start_soon(trio.serve_listeners, handle, listeners)
        yield listeners[0].socket.getsockname()[1], done
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def connected(target: Replicator | Corestore, port: int) -> AsyncIterator[list[Connection]]:
    """Dial 127.0.0.1:port as Noise initiator and replicate in the background."""
    done: list[Connection] = []
    async with trio.open_nursery() as nursery:

        async def dial() -> None:
            done.append(await _replicate(target, await trio.open_tcp_stream("127.0.0.1", port), True))

        nursery.start_soon(dial)
        yield done
        nursery.cancel_scope.cancel()


async def writer_and_reader(tmp_path: Path, n: int) -> tuple[Hypercore, Hypercore, Replicator, Replicator]:
    """A writer with `blocks(n)`, an empty reader of its key, and a Replicator for each."""
    writer = await open_core(tmp_path / "w")
    await writer.append(blocks(n))
    rw = Replicator()
    rw.add(writer)
    reader, rr = await replica(tmp_path / "r", writer.key)
    return writer, reader, rw, rr


async def replica(path: Path, key: bytes) -> tuple[Hypercore, Replicator]:
    """An empty core of `key` at `path` (a seeder or another reader) with its own Replicator."""
    core = await open_core(path, key)
    replicator = Replicator()
    replicator.add(core)
    return core, replicator


def blocks(n: int, start: int = 0) -> list[bytes]:
    return [b"block %d " % i * (i % 7 + 1) for i in range(start, start + n)]


def test_ranges() -> None:
    r = Ranges()
    r.add(0, 10)
    r.add(20, 30)
    r.add(10, 12)
    assert (r.starts, r.ends) == ([0, 20], [12, 30])
    r.remove(5, 25)
    assert (r.starts, r.ends) == ([0, 25], [5, 30])
    assert 4 in r and 5 not in r and 25 in r and 30 not in r
    r.add(3, 27)
    assert (r.starts, r.ends) == ([0], [30])
    assert list(r.clip(5, 25)) == [(5, 25)]
    r.remove(10, 20)
    assert list(r.clip(5, 25)) == [(5, 10), (20, 25)] and list(r.clip(10, 20)) == []
    r.remove(0, 30)
    assert 0 not in r and (r.starts, r.ends) == ([], [])


def _writer_reader(tmp_path: Path, writer_listens: bool) -> None:
    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 40)
        server, client = (rw, rr) if writer_listens else (rr, rw)
        async with serving(server) as (port, _), connected(client, port):
            assert await reader.update()
            assert reader.length == 40
            assert await reader.get(7) == blocks(40)[7]
            await reader.download(0, 40)
            assert [await reader.get(i) for i in range(40)] == blocks(40)
            assert await reader.tree_hash() == await writer.tree_hash()
            # live: appends after connecting reach the reader
            await writer.append(blocks(3, 40))
            assert await reader.get(42) == blocks(3, 40)[2]
            assert reader.length == 43

    run(body)


def test_writer_listens_reader_dials(tmp_path: Path) -> None:
    _writer_reader(tmp_path, writer_listens=True)


def test_reader_listens_writer_dials(tmp_path: Path) -> None:
    _writer_reader(tmp_path, writer_listens=False)


def test_sparse_get_fetches_only_what_is_read(tmp_path: Path) -> None:
    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 100)
        async with serving(rw) as (port, _), connected(rr, port):
            assert await reader.get(63) == blocks(100)[63]
            assert await reader.get(2) == blocks(100)[2]
            assert [i for i in range(100) if reader.has_local(i)] == [2, 63]

    run(body)


def test_a_sparse_seek_fetches_the_blocks_whose_proofs_hold_the_nodes_it_reads(tmp_path: Path) -> None:
    """A sparse core holds only the tree nodes of the blocks it has: a seek fetches the guessed
    block, then a block under each node the walk from the roots still lacks, and lands where a
    full core's seek does. `blocks()` differ in size, so most guesses are wrong."""

    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 200)
        async with serving(rw) as (port, _), connected(rr, port):
            assert await reader.update()
            end = writer.byte_length
            for byte_offset, guess in ((end - 1, 3), (end // 2, None), (end // 3, 40), (1234, 50), (0, 0)):
                assert await reader.seek(byte_offset, guess) == await writer.seek(byte_offset), byte_offset
            assert sum(reader.has_local(i) for i in range(200)) < 40  # a few per seek, not the core

    run(body)


def test_a_sparse_seek_asks_a_peer_for_the_nodes_and_fetches_no_block(tmp_path: Path) -> None:
    """Without a guess, a seek in a sparse core sends seek requests: the peer's proof brings
    the nodes down to the byte, so no block is fetched, wherever the byte is (block starts
    and ends included, where the peer's walk stops a level early)."""

    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 300)
        async with serving(rw) as (port, _), connected(rr, port):
            assert await reader.update()
            sizes = [len(b) for b in blocks(300)]
            starts = [sum(sizes[:i]) for i in (0, 1, 77, 128, 255, 299)]
            end = writer.byte_length
            for byte_offset in (*starts, *(s - 1 for s in starts[1:]), end // 3, end // 2 + 5, end - 1, end):
                assert await reader.seek(byte_offset) == await writer.seek(byte_offset), byte_offset
            assert not any(reader.has_local(i) for i in range(300))

    run(body)


def test_a_seek_a_sparse_peer_cannot_answer_is_asked_of_the_next(tmp_path: Path) -> None:
    """A peer holding the head but not the tree nodes answers a seek request with noData: the
    reader asks its next peer, and still fetches no block."""

    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 300)
        middle, rm = await replica(tmp_path / "m", writer.key)
        async with serving(rw) as (wport, _), serving(rm) as (mport, _):
            async with connected(rm, wport):
                assert await middle.update()
            peers = rr.add(reader).peers
            async with connected(rr, mport):
                await reader.update()
                async with connected(rr, wport):
                    while len(peers) < 2:  # the middle one first: it is asked first
                        await trio.sleep(0.01)
                    assert reader.length == 300
                    end = writer.byte_length
                    for byte_offset in (end // 3, end // 2, end - 10):
                        assert await reader.seek(byte_offset) == await writer.seek(byte_offset)
            assert not any(reader.has_local(i) for i in range(300))
            assert not any(middle.has_local(i) for i in range(300))

    run(body)


def test_a_read_of_missing_blocks_asks_for_them_all_at_once(tmp_path: Path) -> None:
    """`read_bytes` of blocks not stored here wants every block it will read before waiting
    for the first (one round trip, not one per block); `prefetch` wants blocks and returns."""

    async def body() -> None:
        writer = await open_core(tmp_path / "w")
        await writer.append([b"%04d" % i * 250 for i in range(100)])  # 1,000 bytes each
        rw = Replicator()
        rw.add(writer)
        reader, rr = await replica(tmp_path / "r", writer.key)
        wanted = rr.add(reader).wanted
        async with serving(rw) as (port, _):
            async with connected(rr, port):
                assert await reader.update()
            async with trio.open_nursery() as nursery:  # no peer now: the read waits
                nursery.start_soon(reader.read_bytes, 10, 500, 9_000, 100)  # 500 bytes into 10, to 19
                await trio.testing.wait_all_tasks_blocked()
                assert wanted == set(range(10, 20))
                reader.prefetch(50, 53)
                assert wanted == {*range(10, 20), 50, 51, 52}
                async with connected(rr, port):
                    while not await reader.has(50, 53):
                        await trio.sleep(0.01)
            assert [i for i in range(100) if reader.has_local(i)] == [*range(10, 20), 50, 51, 52]

    run(body)


def test_download_reports_progress_and_resumes(tmp_path: Path) -> None:
    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 64)
        seen: list[tuple[int, int]] = []
        async with serving(rw) as (port, _), connected(rr, port):
            await reader.get(5)
            await rr.download(reader, 0, None, progress=lambda done, total: seen.append((done, total)))
        assert seen[-1] == (64, 64)
        assert all(total == 64 and 0 <= done <= 64 for done, total in seen)
        assert reader.contiguous_length == 64

    run(body)


def test_two_cores_on_one_connection(tmp_path: Path) -> None:
    async def body() -> None:
        a = await open_core(tmp_path / "a")
        b = await open_core(tmp_path / "b")
        await a.append(blocks(5))
        await b.append(blocks(9, 100))
        ra = await open_core(tmp_path / "ra", a.key)
        rb = await open_core(tmp_path / "rb", b.key)
        serve, read = Replicator(), Replicator()
        serve.add(a)
        serve.add(b)
        read.add(ra)
        read.add(rb)
        async with serving(serve) as (port, done), connected(read, port):
            await ra.download(0, None)
            await rb.download(0, None)
            assert [await rb.get(i) for i in range(9)] == blocks(9, 100)
            assert [await ra.get(i) for i in range(5)] == blocks(5)
            assert len(read.connections) == 1 and len(read.connections[0].peers) == 2

    run(body)


def test_unknown_core_is_rejected_and_the_rest_replicates(tmp_path: Path) -> None:
    async def body() -> None:
        a = await open_core(tmp_path / "a")
        other = await open_core(tmp_path / "other")
        await a.append(blocks(3))
        ra = await open_core(tmp_path / "ra", a.key)
        r_other = await open_core(tmp_path / "ro", other.key)
        serve, read = Replicator(), Replicator()
        serve.add(a)
        read.add(r_other)  # the server does not have this one: its open is rejected
        read.add(ra)
        async with serving(serve) as (port, _), connected(read, port):
            assert await ra.get(2) == blocks(3)[2]
            assert read.connections[0].error is None

    run(body)


def test_truncation_reaches_the_reader_as_a_new_fork(tmp_path: Path) -> None:
    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 10)
        async with serving(rw) as (port, _), connected(rr, port):
            await reader.download(0, None)
            await writer.truncate(6)
            await writer.append([b"new 6", b"new 7"])
            while reader.fork != writer.fork or reader.length != 8:
                await reader.wait_append()
            assert await reader.get(7) == b"new 7"
            assert await reader.get(5) == blocks(10)[5]
            assert await reader.tree_hash() == await writer.tree_hash()

    run(body)


def test_a_fork_moves_the_readers_contiguous_length_back(tmp_path: Path) -> None:
    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 10)

        async def first_missing() -> int:
            for i in range(reader.length):
                if not await reader.has(i):
                    return i
            return reader.length

        async with serving(rw) as (port, _), connected(rr, port):
            await reader.download(0, 10)
            assert reader.contiguous_length == 10
            await writer.truncate(6)
            await writer.append([b"new 6", b"new 7"])
            while reader.fork != writer.fork or reader.length != 8:
                await reader.wait_append()
            # The new fork's blocks are not fetched: the run of stored blocks ends before them.
            assert reader.contiguous_length == await first_missing() < 8
            assert await reader.get(7) == b"new 7"
            assert reader.contiguous_length == await first_missing() < 8
            await reader.download(0, 8)
            assert reader.contiguous_length == await first_missing() == 8

    run(body)


def test_a_fork_keeps_the_blocks_under_the_roots_both_forks_share(tmp_path: Path) -> None:
    """64 blocks cut to 40 and grown to 50: the new fork's first root covers blocks 0-31, the
    same subtree as before, so the reader keeps them; 32-39 lie under a changed root and go."""
    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 64)
        async with serving(rw) as (port, _), connected(rr, port):
            await reader.download(0, 64)
            truncations = reader.on_truncate()
            await writer.truncate(40)
            await writer.append(blocks(10, 100))
            while reader.fork != writer.fork or reader.length != 50:
                await reader.wait_append()
            assert [await reader.has(i) for i in range(50)] == [True] * 32 + [False] * 18
            assert reader.contiguous_length == 32
            assert truncations.receive_nowait() == (32, writer.fork)
            assert [await reader.get(i) for i in range(50)] == blocks(40) + blocks(10, 100)
            assert await reader.tree_hash() == await writer.tree_hash()

    run(body)


def test_a_reader_serves_what_it_downloaded(tmp_path: Path) -> None:
    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 20)
        seeder, rs = await replica(tmp_path / "s", writer.key)
        async with serving(rw) as (port, _):
            async with connected(rs, port):
                await seeder.download(0, None)
        # the writer is gone: the reader gets everything from the seeder
        async with serving(rs) as (port, _), connected(rr, port):
            await reader.download(0, None)
            assert [await reader.get(i) for i in range(20)] == blocks(20)

    run(body)


def test_a_sparse_seeder_answers_wants_with_what_it_has(tmp_path: Path) -> None:
    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 30)
        seeder, rs = await replica(tmp_path / "s", writer.key)
        async with serving(rw) as (port, _):
            async with connected(rs, port):
                await seeder.download(10, 20)
        assert seeder.contiguous_length == 0  # nothing to announce with a `range` from 0
        async with serving(rs) as (port, _), connected(rr, port):
            await reader.download(10, 20)
            assert [await reader.get(i) for i in range(10, 20)] == blocks(30)[10:20]
            assert not reader.has_local(9) and not reader.has_local(20)

    run(body)


def test_wants_no_peer_has_are_parked_then_dropped_unless_a_reader_waits(tmp_path: Path) -> None:
    """Read-ahead asks for blocks before anyone reads them. Those no peer has leave the fetch
    loops' list (each pass went through every one: 58,000 of them made 2,000 reads take 30 s,
    not 1.6), come back when a peer announces them, and are dropped after the request timeout
    unless a reader waits for one."""

    async def body() -> None:
        writer, reader, rw, _ = await writer_and_reader(tmp_path, 30)
        seeder, rs = await replica(tmp_path / "s", writer.key)
        async with serving(rw) as (port, _), connected(rs, port):
            await seeder.download(0, 10)
        rr = Replicator(request_timeout=0.5)
        state = rr.add(reader)
        async with serving(rs) as (port, _), connected(rr, port), trio.open_nursery() as nursery:
            await reader.update()
            reader.prefetch(5, 20)
            nursery.start_soon(reader.get, 25)  # a reader waits for block 25
            while not all(reader.has_local(i) for i in range(5, 10)) or len(state.parked) < 11:
                await trio.sleep(0.01)
            assert not state.wanted and sorted(state.parked) == [*range(10, 20), 25]
            # The seeder gets block 10 and announces it: wanted again, and fetched.
            async with serving(rw) as (port2, _), connected(rs, port2):
                await seeder.get(10)
            while not reader.has_local(10):
                await trio.sleep(0.01)
            await trio.sleep(1.5)  # past the request timeout: the wants no one waits for go
            assert state.parked.keys() == {25} and not state.wanted
            nursery.cancel_scope.cancel()
        assert not any(reader.has_local(i) for i in [*range(11, 20), 25])

    run(body)


def test_a_seeder_leaving_one_peer_as_it_stores_a_block_keeps_its_other_peers(tmp_path: Path) -> None:
    """A block stored from one peer is announced to every peer. Sent from the storing
    connection's task, a cancel of that connection (the first peer leaving) could land mid-send
    on another's stream, which was then closed: about one time in three here."""

    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 20)
        seeder, rs = await replica(tmp_path / "s", writer.key)
        async with serving(rs) as (port, _), connected(rr, port) as ended:
            await reader.update()
            for i in range(12):
                async with serving(rw) as (writer_port, _), connected(rs, writer_port):
                    await seeder.get(i)  # stored, announced, and the writer's connection cancelled
                await trio.sleep(0.05)
                assert not ended and len(rr.add(reader).peers) == 1, i
            assert await reader.get(11) == blocks(20)[11]

    run(body)


def test_a_sparse_seeder_announces_blocks_it_gets_out_of_order(tmp_path: Path) -> None:
    """A seeder holding blocks 0-9 gets block 25 later: it tells its readers, as JS does for
    every block it gets, so one waiting for block 25 asks it (it announced only its
    contiguous length before, and the reader waited in vain)."""

    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 30)
        seeder, rs = await replica(tmp_path / "s", writer.key)
        async with serving(rw) as (port, _), connected(rs, port):
            await seeder.download(0, 10)
        async with serving(rs) as (port, _), connected(rr, port), trio.open_nursery() as nursery:
            await reader.update()
            got: list[bytes] = []

            async def read() -> None:
                got.append(await reader.get(25, timeout=10))

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            async with serving(rw) as (writer_port, _), connected(rs, writer_port):
                await seeder.get(25)
        assert got == [blocks(30)[25]] and not reader.has_local(24)

    run(body)


def test_a_reader_announces_no_block_to_the_peer_that_has_it(tmp_path: Path) -> None:
    """Blocks read here out of order are announced only to peers that lack them: a random
    reader of a big file would otherwise tell the seeder about each block it sent, and a
    seeder drops a peer past MAX_REMOTE_RUNS separate runs."""

    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 30)
        async with serving(rw) as (port, _), connected(rr, port):
            for index in (5, 9, 20):
                await reader.get(index)
            await reader.get(0)  # announced (contiguous now) after what the reads above sent
            (seeder_side,) = rw.add(writer).peers
            while 0 not in seeder_side.remote_has:
                await trio.sleep(0.01)
            assert not any(i in seeder_side.remote_has for i in (5, 9, 20))

    run(body)


def test_closing_the_core_ends_replication_quietly(tmp_path: Path) -> None:
    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 5)
        async with serving(rw) as (port, _), connected(rr, port) as done:
            await reader.get(4)
            await reader.close()
            await writer.append(blocks(1, 5))  # the reader's peer must notice its core is gone
            while not done:
                await trio.sleep(0.01)
            assert done[0].error is None

    run(body)
