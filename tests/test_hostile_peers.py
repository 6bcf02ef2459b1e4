"""Hostile peers: each is dropped, nothing it sent is stored, and an honest peer still works.

The hostile side is a real writer core behind a hand-driven Protomux channel that bends one rule
(a tampered proof, a forged signature, a wrong capability) or the raw connection itself (a
truncated frame, random bytes after the handshake). The reader under test is the real one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from hyperfs.core import caps
from hyperfs.core.hypercore import Hypercore
from hyperfs.core.manifest import encode_manifest
from hyperfs.core.proof import generate_proof
from hyperfs.core.protocol import messages as m
from hyperfs.core.protocol.framing import frame_header
from hyperfs.core.protocol.protomux import Channel, Mux
from hyperfs.core.protocol.replicator import Connection, Replicator
from hyperfs.core.protocol.secret_stream import SecretStream
from hyperfs.errors import RequestTimeoutError, TreeNodeMissingError
from tests.test_replicator import blocks, connected, run, serving, writer_and_reader

Tamper = Callable[[m.Data], m.Data | None]


async def bent_writer(
    secret: SecretStream, core: Hypercore, tamper: Tamper, key_for_cap: bytes, announce: m.Message | None = None,
    pause: float = 0.0,
) -> None:
    """Serve `core` like an honest writer, except every answer goes through `tamper` (and it
    announces its blocks with `announce`, a `range` of all of them by default), `pause`
    seconds after the last (requests are answered one at a time, as a slow link would)."""
    mux = Mux(secret)
    in_turn = trio.Lock()  # FIFO: answers go in the order asked

    async def answer(channel: Channel, req: m.Request) -> None:
        async with in_turn:
            await trio.sleep(pause)
            head = core.head
            data = await trio.to_thread.run_sync(generate_proof, core, req, head.length, head.fork, head.signature)
            if req.manifest:
                data.manifest = encode_manifest(core.manifest)
            tampered = tamper(data)
            if tampered is not None:  # None: never answer
                await channel.send(m.Data.TYPE, m.encode(tampered))

    async def on_request(channel: Channel, payload: memoryview) -> None:
        nursery.start_soon(answer, channel, m.decode(m.Request.TYPE, payload))

    async def on_open(channel: Channel, handshake: memoryview) -> None:
        await channel.send(m.Sync.TYPE, m.encode(m.Sync(length=core.length, has_manifest=True)))
        msg = announce or m.Range(0, core.length)
        await channel.send(msg.TYPE, m.encode(msg))

    channel = mux.create_channel(m.PROTOCOL, core.discovery_key, messages=[None, on_request], on_open=on_open)
    assert channel is not None
    cap = caps.replicate_capability(secret.is_initiator, key_for_cap, secret.handshake_hash)
    async with trio.open_nursery() as nursery:
        await channel.open(m.Handshake(cap).encode())
        await mux.run()
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def hostile_server(behave: Callable[[SecretStream], Awaitable[None]]) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

        async def handle(stream: trio.SocketStream) -> None:
            secret = await SecretStream.connect(stream, False)
            try:
                await behave(secret)
            except Exception:  # noqa: BLE001 - the hostile side may fail however it likes
                pass
            await secret.abort()

        nursery.start_soon(trio.serve_listeners, handle, listeners)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def _flip(data: bytes, at: int = 0) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1 :]


def tamper_block(data: m.Data) -> m.Data:
    if data.block is not None:
        return replace(data, block=replace(data.block, value=_flip(data.block.value)))
    return data


def tamper_signature(data: m.Data) -> m.Data:
    if data.upgrade is not None:
        return replace(data, upgrade=replace(data.upgrade, signature=_flip(data.upgrade.signature, 20)))
    return data


def tamper_upgrade_nodes(data: m.Data) -> m.Data:
    if data.upgrade is not None and data.upgrade.nodes:
        node = data.upgrade.nodes[0]
        nodes = [node._replace(hash=_flip(node.hash)), *data.upgrade.nodes[1:]]
        return replace(data, upgrade=replace(data.upgrade, nodes=nodes))
    return data


def tamper_seek(data: m.Data) -> m.Data:
    """A seek proof whose path down to the byte does not hash to the node it hangs off."""
    if data.seek is not None:
        node = data.seek.nodes[0]
        nodes = [node._replace(hash=_flip(node.hash)), *data.seek.nodes[1:]]
        return replace(data, seek=replace(data.seek, nodes=nodes))
    return data


async def _until_dropped(connections: list[Connection]) -> Connection:
    while not connections:
        await trio.sleep(0.01)
    return connections[0]


def _case(tmp_path: Path, behave_for: Callable[[Hypercore], Callable[[SecretStream], Awaitable[None]]], error: str,
          keeps_upgrade: bool = False) -> None:
    async def body() -> None:
        writer, reader, rw, _ = await writer_and_reader(tmp_path, 12)
        rr = Replicator(request_timeout=2.0)
        rr.add(reader)
        async with hostile_server(behave_for(writer)) as port, connected(rr, port) as done:
            download = trio.CancelScope()

            async def try_download() -> None:
                with download:
                    await reader.download(0, 12)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(try_download)
                conn = await _until_dropped(done)
                download.cancel()
            assert conn.error is not None and error in conn.error
        # nothing from the hostile peer was stored (a valid signed upgrade may be, blocks not)
        assert not any(reader.has_local(i) for i in range(12))
        assert reader.length == (12 if keeps_upgrade else 0)
        # and the reader still works with an honest peer
        async with serving(rw) as (port, _), connected(rr, port):
            await reader.download(0, 12)
            assert [await reader.get(i) for i in range(12)] == blocks(12)

    run(body)


def _bent(
    tamper: Tamper, wrong_key: bool = False, announce: m.Message | None = None
) -> Callable[[Hypercore], Callable[[SecretStream], Awaitable[None]]]:
    def make(core: Hypercore) -> Callable[[SecretStream], Awaitable[None]]:
        async def behave(secret: SecretStream) -> None:
            await bent_writer(secret, core, tamper, os.urandom(32) if wrong_key else core.key, announce)

        return behave

    return make


def test_block_with_a_wrong_proof(tmp_path: Path) -> None:
    _case(tmp_path, _bent(tamper_block), "VerificationError", keeps_upgrade=True)


def test_upgrade_with_a_wrong_node(tmp_path: Path) -> None:
    _case(tmp_path, _bent(tamper_upgrade_nodes), "VerificationError")


def test_wrong_signature(tmp_path: Path) -> None:
    _case(tmp_path, _bent(tamper_signature), "VerificationError")


def test_wrong_capability(tmp_path: Path) -> None:
    _case(tmp_path, _bent(lambda d: d, wrong_key=True), "capability")


def _raw(payload: Callable[[SecretStream], Awaitable[None]]) -> Callable[[Hypercore], Callable[[SecretStream], Awaitable[None]]]:
    return lambda core: payload


async def truncated_frame(secret: SecretStream) -> None:
    await secret.transport.send_all(frame_header(100) + os.urandom(40))
    await secret.transport.send_eof()  # a clean FIN right inside the frame
    while await secret.transport.receive_some(65536):
        pass


async def random_frame(secret: SecretStream) -> None:
    await secret.transport.send_all(frame_header(200) + os.urandom(200))
    await trio.sleep(5)


async def random_message(secret: SecretStream) -> None:
    # well encrypted, but the plaintext is garbage for Protomux: a batch whose first message
    # claims more bytes than follow (an unknown control type would be ignored, as JS does)
    await secret.send(b"\x00\x00\x00\x7f" + os.urandom(60))
    await trio.sleep(5)


@pytest.mark.parametrize("behave", [truncated_frame, random_frame, random_message], ids=lambda f: f.__name__)
def test_garbage_after_the_handshake(tmp_path: Path, behave: Callable[[SecretStream], Awaitable[None]]) -> None:
    _case(tmp_path, _raw(behave), "Error")


def test_blocks_announced_by_bitfield_are_fetched(tmp_path: Path) -> None:
    async def body() -> None:
        writer, reader, _, rr = await writer_and_reader(tmp_path, 40)
        bitfield = m.Bitfield(0, [0xFFFFFFFF, 0xFF])  # blocks 0..39
        async with hostile_server(_bent(lambda d: d, announce=bitfield)(writer)) as port, connected(rr, port):
            await reader.download(0, 40)
            assert [await reader.get(i) for i in range(40)] == blocks(40)

    run(body)


def test_a_flood_of_announced_runs_drops_the_peer(tmp_path: Path) -> None:
    # every other block: 16 runs a word, far more than a peer may make us remember
    flood = m.Bitfield(0, [0x55555555] * 0x10000)
    _case(tmp_path, _bent(lambda d: d, announce=flood), "runs of blocks")


def test_a_peer_that_never_answers_times_out(tmp_path: Path) -> None:
    _case(tmp_path, _bent(lambda d: d if d.block is None else None), "RequestTimeoutError", keeps_upgrade=True)


def test_a_slow_peer_that_keeps_answering_is_kept(tmp_path: Path) -> None:
    """A peer answering a request every 0.3 s: the last of the requests in flight waits far
    longer than the request timeout (1 s) behind the others, but the peer is not dead."""

    async def body() -> None:
        writer, reader, _, _ = await writer_and_reader(tmp_path, 12)
        rr = Replicator(request_timeout=1.0)
        rr.add(reader)

        async def behave(secret: SecretStream) -> None:
            await bent_writer(secret, writer, lambda d: d, writer.key, pause=0.3)

        async with hostile_server(behave) as port, connected(rr, port) as done:
            await reader.download(0, 12)
        assert [await reader.get(i) for i in range(12)] == blocks(12)
        assert all(conn.error is None for conn in done)

    run(body)


def test_a_tampered_seek_proof_drops_the_peer_and_stores_no_node(tmp_path: Path) -> None:
    async def body() -> None:
        writer, reader, _, _ = await writer_and_reader(tmp_path, 300)
        rr = Replicator()
        rr.add(reader)
        byte = writer.byte_length // 2
        async with hostile_server(_bent(tamper_seek)(writer)) as port, connected(rr, port) as done:
            await reader.update()
            with pytest.raises(RequestTimeoutError):  # no honest peer: the block fetch after it waits
                await reader.seek(byte, timeout=2)
            conn = await _until_dropped(done)
        assert conn.error is not None and "VerificationError" in conn.error
        with pytest.raises(TreeNodeMissingError):
            reader.seek_sync(byte)  # nothing of the proof was stored
        assert not any(reader.has_local(i) for i in range(300))

    run(body)


def test_an_answer_to_a_request_never_made(tmp_path: Path) -> None:
    _case(tmp_path, _bent(lambda d: replace(d, request=d.request + 1000)), "which we did not send")


def test_one_download_survives_a_hostile_peer(tmp_path: Path) -> None:
    async def body() -> None:
        writer, reader, rw, rr = await writer_and_reader(tmp_path, 200)
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def download() -> None:
                await reader.download(0, 200)
                done.set()

            async with hostile_server(_bent(tamper_block)(writer)) as bad, connected(rr, bad) as dropped:
                nursery.start_soon(download)
                await _until_dropped(dropped)  # bad proofs: dropped in the middle of the download
            assert "VerificationError" in (dropped[0].error or "") and not done.is_set()
            async with serving(rw) as (good, _), connected(rr, good):
                await done.wait()  # the same download finishes from the honest peer
        assert [await reader.get(i) for i in range(200)] == blocks(200)

    run(body)


def _never_answers_block(index: int | None = None) -> Tamper:
    """Answers everything but block requests (for block `index` only, if given)."""
    return lambda d: None if d.block is not None and index in (None, d.block.index) else d


async def _until_asked(reader: Hypercore, rr: Replicator, index: int) -> None:
    state = rr.add(reader)
    while index not in state.inflight:
        await trio.sleep(0.01)


@pytest.mark.parametrize("lost", [None, 5], ids=["silent", "loses-one"])
def test_blocks_a_peer_does_not_answer_are_asked_of_another(tmp_path: Path, lost: int | None) -> None:
    """A peer that keeps its connection but never answers the block requests it took (or one
    of them, answering the rest): a reader waiting for those blocks gets them from an honest
    peer within `overdue_after`, not after the request timeout (or never, as the peer answers
    others), and the peer is kept."""

    async def body() -> None:
        writer, reader, rw, _ = await writer_and_reader(tmp_path, 40)
        rr = Replicator(request_timeout=3600, overdue_after=0.3)
        rr.add(reader)
        async with trio.open_nursery() as nursery:
            got: dict[int, bytes] = {}

            async def get(index: int) -> None:
                got[index] = await reader.get(index)

            async with hostile_server(_bent(_never_answers_block(lost))(writer)) as bad, connected(rr, bad) as dropped:
                await reader.update()
                for index in range(40):
                    nursery.start_soon(get, index)
                await _until_asked(reader, rr, 5)  # asked of the hostile peer, the only one
                async with serving(rw) as (good, _), connected(rr, good):
                    with trio.fail_after(10):  # without asking again: the request timeout, an hour
                        while len(got) < 40:
                            await trio.sleep(0.01)
                assert not dropped
        assert [got[i] for i in range(40)] == blocks(40)

    run(body)


def test_blocks_asked_of_two_peers_are_stored_once(tmp_path: Path) -> None:
    """Two peers slow to answer, and requests overdue after 10 ms: blocks are asked of both. The
    second answer is dropped, a download counts each block once, and nothing stays in flight."""

    async def body() -> None:
        writer, reader, _, _ = await writer_and_reader(tmp_path, 120)
        rr = Replicator(overdue_after=0.01)
        rr.add(reader)
        seen: list[tuple[int, int]] = []

        async def slow(secret: SecretStream) -> None:
            await bent_writer(secret, writer, lambda d: d, writer.key, pause=0.02)

        async with hostile_server(slow) as port, connected(rr, port) as one, connected(rr, port) as two:
            await rr.download(reader, 0, 120, progress=lambda done, total: seen.append((done, total)))
            state = rr.add(reader)
            while state.inflight:  # the slower answers are in, and dropped
                await trio.sleep(0.01)
            assert not one and not two
        assert seen[-1] == (120, 120) and all(done <= total for done, total in seen)
        assert [await reader.get(i) for i in range(120)] == blocks(120)

    run(body)
