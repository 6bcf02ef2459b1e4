"""Block requests that lean on each other: a request may ask for fewer tree nodes because an
earlier one in flight will prove the rest. A peer answering out of order, or refusing the
earlier request, must neither stall the download nor get dropped, and every block stored is
the writer's."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from hyperfs.core import caps
from hyperfs.core.hypercore import Hypercore
from hyperfs.core.manifest import encode_manifest
from hyperfs.core.proof import generate_proof
from hyperfs.core.protocol import messages as m
from hyperfs.core.protocol.protomux import Channel, Mux
from hyperfs.core.protocol.secret_stream import SecretStream
from tests.test_hostile_peers import hostile_server
from tests.test_replicator import blocks, connected, run, writer_and_reader

BLOCKS = 300


def shuffling_writer(
    core: Hypercore, asked: list[int], refuse: Callable[[int], bool] = lambda index: False
) -> Callable[[SecretStream], Awaitable[None]]:
    """Serve `core` answering each burst of requests last first; a block request `refuse`
    picks gets noData the first time, and the block is announced again right after.
    `asked` collects the node counts of the block requests."""

    async def behave(secret: SecretStream) -> None:
        mux = Mux(secret)
        pending: list[m.Request] = []
        refused: set[int] = set()
        arrived = trio.Event()

        async def on_request(channel: Channel, payload: memoryview) -> None:
            req = m.decode(m.Request.TYPE, payload)
            if req.block is not None:
                asked.append(req.block.nodes)
            pending.append(req)
            arrived.set()

        async def on_open(channel: Channel, handshake: memoryview) -> None:
            await channel.send(m.Sync.TYPE, m.encode(m.Sync(length=core.length, has_manifest=True)))
            await channel.send(m.Range.TYPE, m.encode(m.Range(0, core.length)))

        async def answer(channel: Channel) -> None:
            nonlocal arrived
            while True:
                await arrived.wait()
                arrived = trio.Event()
                await trio.sleep(0.005)  # let a burst gather
                burst = pending[::-1]
                pending.clear()
                for req in burst:
                    index = req.block.index if req.block is not None else None
                    if index is not None and index not in refused and refuse(index):
                        refused.add(index)
                        await channel.send(m.NoData.TYPE, m.encode(m.NoData(req.id, m.NOT_AVAILABLE)))
                        await channel.send(m.Range.TYPE, m.encode(m.Range(index, 1)))
                        continue
                    head = core.head
                    data = generate_proof(core, req, head.length, head.fork, head.signature)
                    if req.manifest:
                        data.manifest = encode_manifest(core.manifest)
                    await channel.send(m.Data.TYPE, m.encode(data))

        channel = mux.create_channel(m.PROTOCOL, core.discovery_key, messages=[None, on_request], on_open=on_open)
        assert channel is not None
        cap = caps.replicate_capability(secret.is_initiator, core.key, secret.handshake_hash)
        await channel.open(m.Handshake(cap).encode())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer, channel)
            await mux.run()
            nursery.cancel_scope.cancel()

    return behave


def _download(tmp_path: Path, refuse: Callable[[int], bool] = lambda index: False) -> list[int]:
    async def body() -> list[int]:
        writer, reader, _, rr = await writer_and_reader(tmp_path, BLOCKS)
        asked: list[int] = []
        async with hostile_server(shuffling_writer(writer, asked, refuse)) as port, connected(rr, port) as done:
            with trio.fail_after(60):
                await reader.download(0, BLOCKS)
            assert not done  # the connection is still up: nobody was dropped
        assert [await reader.get(i) for i in range(BLOCKS)] == blocks(BLOCKS)
        assert reader.head == writer.head
        return asked

    return run(body)


def test_answers_out_of_order_are_stored_in_order_of_trust(tmp_path: Path) -> None:
    asked = _download(tmp_path)
    assert len(asked) == BLOCKS  # nothing asked twice
    assert sum(nodes <= 1 for nodes in asked) > BLOCKS // 2  # most leaned on an earlier request


def test_a_refused_request_makes_those_leaning_on_it_ask_again(tmp_path: Path) -> None:
    asked = _download(tmp_path, refuse=lambda index: index % 7 == 3)
    assert len(asked) > BLOCKS + BLOCKS // 7  # the refused ones and some leaning on them, again


def test_random_refusals_keep_every_block_right(tmp_path: Path) -> None:
    picks = set(os.urandom(40))
    _download(tmp_path, refuse=lambda index: index in picks)
