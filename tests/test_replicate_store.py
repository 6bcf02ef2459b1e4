"""Corestore replication: `store.replicate(stream, is_initiator)`, several cores on one connection."""

from __future__ import annotations

from pathlib import Path

from hyperfs.core.corestore import Corestore
from hyperfs.core.protocol.keys import noise_key_pair
from tests.test_replicator import blocks, connected, run, serving


def test_cores_opened_before_and_after_connecting(tmp_path: Path) -> None:
    async def body() -> None:
        async with Corestore(str(tmp_path / "a")) as a, Corestore(str(tmp_path / "b")) as b:
            one = await a.get(name="one")
            two = await a.get(name="two")
            await one.append(blocks(10))
            await two.append(blocks(4, 50))
            early = await b.get(key=one.key)  # open before replicating
            async with serving(a) as (port, _), connected(b, port):
                assert await early.get(9) == blocks(10)[9]
                late = await b.get(key=two.key)  # opened on a live connection
                await late.download(0, None)
                assert [await late.get(i) for i in range(4)] == blocks(4, 50)
                replicator = b.root.replicator
                assert replicator is not None and len(replicator.connections) == 1
                assert len(replicator.connections[0].peers) == 2

    run(body)


def test_a_core_the_server_has_closed_is_found_by_discovery_key(tmp_path: Path) -> None:
    async def body() -> None:
        async with Corestore(str(tmp_path / "a")) as a, Corestore(str(tmp_path / "b")) as b:
            core = await a.get(name="archived")
            await core.append(blocks(6))
            key = core.key
            await core.close()
            async with serving(a) as (port, _), connected(b, port):
                reader = await b.get(key=key)
                await reader.download(0, None)
                assert [await reader.get(i) for i in range(6)] == blocks(6)

    run(body)


def test_a_store_uses_its_stable_noise_key_pair(tmp_path: Path) -> None:
    async def body() -> None:
        async with Corestore(str(tmp_path / "a")) as a, Corestore(str(tmp_path / "b")) as b:
            core = await a.get(name="x")
            await core.append(blocks(1))
            reader = await b.get(key=core.key)
            async with serving(a) as (port, _), connected(b, port):
                await reader.get(0)
                (conn,) = b.root.replicator.connections
                assert conn.stream.remote_public_key == noise_key_pair(a).public_key
                assert conn.stream.public_key == noise_key_pair(b).public_key

    run(body)
