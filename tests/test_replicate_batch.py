"""`Hypercore.apply_proofs`: many verified proofs stored in one write, in order, across a fork."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from hyperfs.core import Corestore, Hypercore
from hyperfs.core.encoding import TreeNode
from hyperfs.core.proof import VerifiedProof, generate_proof, verify_proof
from hyperfs.core.protocol.messages import IndexNodes, Request, UpgradeRequest
from hyperfs.errors import VerificationError
from tests.drive_store import trio_test


def _proof(
    writer: Hypercore, reader: Hypercore, index: int, *, length: int, fork: int, roots: list[TreeNode],
    known: dict[int, TreeNode], upgrade: bool = False, nodes: int = 0,
) -> VerifiedProof:
    """The writer's proof of block `index`, verified against the reader head (`length`, `fork`, `roots`)."""
    start = length if writer.fork == fork else 0  # as the replicator asks: from 0 across a fork
    request = Request(
        id=1, fork=writer.fork if upgrade else fork, block=IndexNodes(index, nodes),
        upgrade=UpgradeRequest(start, writer.length - start) if upgrade else None,
    )
    data = generate_proof(writer, request, writer.length, writer.fork, writer.head.signature)
    return verify_proof(
        data, length=length, fork=fork, roots=roots,
        stored_node=lambda i: known.get(i) or reader.read_nodes_sync([i]).get(i),
        check_signature=reader.state.verify_head,
    )


@trio_test
async def test_a_batch_with_an_upgrade_then_a_fork_with_a_stale_block(tmp_path: Path) -> None:
    async with Corestore(str(tmp_path / "w")) as ws, Corestore(str(tmp_path / "r")) as rs:
        writer = await ws.get("log")
        await writer.append([b"a%d" % i for i in range(8)])
        reader = await rs.get(key=writer.key, manifest=writer.manifest)

        # One batch: the upgrade to length 8 (with block 0), then blocks 1-3 proven against it.
        first = _proof(writer, reader, 0, length=0, fork=0, roots=[], known={}, upgrade=True)
        assert first.upgrade is not None
        roots, known = list(first.upgrade.roots), {n.index: n for n in first.nodes}
        rest = [_proof(writer, reader, i, length=8, fork=0, roots=roots, known=known, nodes=3) for i in (1, 2, 3)]
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def wants() -> None:
                got.append(await reader.get(2, timeout=10))

            nursery.start_soon(wants)
            await trio.sleep(0.01)
            assert await reader.apply_proofs([first, *rest]) == [first, *rest]
        assert got == [b"a2"] and reader.length == 8 and reader.contiguous_length == 4
        assert list(reader.local_ranges()) == [(0, 4)]

        # A proof of block 6 made before the writer forks, stored after the fork: it is stale.
        stale = _proof(writer, reader, 6, length=8, fork=0, roots=reader.state.roots, known={}, nodes=3)
        await writer.truncate(4)
        await writer.append([b"b%d" % i for i in range(4, 8)])
        forked = _proof(writer, reader, 5, length=8, fork=0, roots=reader.state.roots, known={}, upgrade=True)
        assert await reader.apply_proofs([forked, stale]) == [forked]
        assert reader.fork == 1 and reader.head == writer.head
        assert list(reader.local_ranges()) == [(5, 6)] and await reader.get(5) == b"b5"
        key = writer.key

    async with Corestore(str(tmp_path / "r")) as rs:  # the batch is on disk as it is in memory
        reader = await rs.get(key=key)
        assert (reader.fork, reader.length) == (1, 8)
        assert list(reader.local_ranges()) == [(5, 6)] and await reader.get(5) == b"b5"


@trio_test
async def test_a_batch_that_fails_verification_stores_nothing(tmp_path: Path) -> None:
    async with Corestore(str(tmp_path / "w")) as ws, Corestore(str(tmp_path / "r")) as rs:
        writer = await ws.get("log")
        await writer.append([b"a%d" % i for i in range(4)])
        reader = await rs.get(key=writer.key, manifest=writer.manifest)
        good = _proof(writer, reader, 0, length=0, fork=0, roots=[], known={}, upgrade=True)

        def bad() -> list[VerifiedProof]:
            raise VerificationError("a proof in the batch does not verify")

        with pytest.raises(VerificationError):
            await reader.verify_and_apply(bad)
        assert reader.length == 0 and not reader.has_local(0)
        assert await reader.verify_and_apply(lambda: [good]) == [good]  # the lock was released
        assert reader.length == 4 and await reader.get(0) == b"a0"
