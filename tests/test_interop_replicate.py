"""Replication against the real JavaScript Hypercore 11 peer (shared/interop/peer.js), over TCP.

JS writer -> hyperfs reader and hyperfs writer -> JS reader, hyperfs as TCP client and as TCP
server, live appends after connecting, a 10 MiB core, and two cores on one connection carried
by a JS mirror to a second hyperfs store.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from hyperfs.core.hypercore import Hypercore
from hyperfs.core.protocol.replicator import Replicator
from tests.interop import INTEROP_DIR, interop_block, js_peer, peer_command, read_json_line, require_peer
from tests.test_replicator import connected, open_core, run, serving

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _peer_installed() -> None:
    require_peer()


@asynccontextmanager
async def js(*args: str) -> AsyncIterator[tuple[Any, dict]]:
    """`js_peer(*args)` entered from trio (its first JSON line is read in a worker thread)."""
    cm = js_peer(*args)
    proc, line = await trio.to_thread.run_sync(cm.__enter__)
    try:
        yield proc, line
    finally:
        await trio.to_thread.run_sync(cm.__exit__, None, None, None)


async def next_line(proc: Any, timeout: float = 60.0) -> dict:
    return await trio.to_thread.run_sync(read_json_line, proc, timeout)


async def check_reader(reader: Hypercore, length: int, size: int = 0) -> None:
    await reader.download(0, length)
    for i in range(length):
        assert await reader.get(i) == interop_block(i, size), f"block {i}"


async def write_interop(core: Hypercore, start: int, end: int, size: int = 0) -> None:
    await core.append([interop_block(i, size) for i in range(start, end)])


# --- JS writer -> hyperfs reader -----------------------------------------------------------------


def test_js_writer_hyperfs_reader_dials_with_live_appends(tmp_path: Path) -> None:
    async def body() -> None:
        async with js(
            "seed", "--storage", str(tmp_path / "js"), "--blocks", "20", "--listen", "0",
            "--append-every", "150", "--append-max", "5", "--key-seed", "live-dial",
        ) as (_, seed):
            reader = await open_core(tmp_path / "r", bytes.fromhex(seed["key"]))
            rr = Replicator()
            rr.add(reader)
            async with connected(rr, seed["port"]):
                assert await reader.get(24) == interop_block(24)  # arrives after connecting
                await check_reader(reader, 25)
                assert (await reader.tree_hash(20)).hex() == seed["treeHash"]

    run(body)


def test_hyperfs_reader_seeks_in_a_js_core_without_fetching_blocks(tmp_path: Path) -> None:
    """Our seek requests, answered by JS (`blockAndSeekProof`): a sparse reader finds bytes
    in blocks of differing sizes from the proofs alone, at block starts and inside blocks."""

    async def body() -> None:
        async with js("seed", "--storage", str(tmp_path / "js"), "--blocks", "2000", "--listen", "0") as (_, seed):
            reader = await open_core(tmp_path / "r", bytes.fromhex(seed["key"]))
            rr = Replicator()
            rr.add(reader)
            async with connected(rr, seed["port"]):
                assert await reader.update()
                starts = [0]
                for i in range(2000):
                    starts.append(starts[-1] + len(interop_block(i)))
                for index in (0, 1, 9, 10, 99, 100, 1023, 1024, 1999):
                    for skip in (0, 5):
                        assert await reader.seek(starts[index] + skip) == (index, skip)
                assert await reader.seek(starts[-1]) == (2000, 0)
                assert not any(reader.has_local(i) for i in range(2000))

    run(body)


def test_js_writer_dials_hyperfs_reader_listening(tmp_path: Path) -> None:
    async def body() -> None:
        reader: Hypercore | None = None
        rr = Replicator()
        async with serving(rr) as (port, _):
            async with js(
                "seed", "--storage", str(tmp_path / "js"), "--blocks", "12", "--connect", f"127.0.0.1:{port}",
                "--append-every", "150", "--append-max", "3", "--key-seed", "live-listen",
            ) as (_, seed):
                reader = await open_core(tmp_path / "r", bytes.fromhex(seed["key"]))
                rr.add(reader)
                assert await reader.get(14) == interop_block(14)
                await check_reader(reader, 15)
                assert (await reader.tree_hash(12)).hex() == seed["treeHash"]

    run(body)


def test_js_writer_10mib_core(tmp_path: Path) -> None:
    async def body() -> None:
        size = 65536
        async with js(
            "seed", "--storage", str(tmp_path / "js"), "--blocks", "160", "--block-size", str(size), "--listen", "0",
        ) as (_, seed):
            reader = await open_core(tmp_path / "r", bytes.fromhex(seed["key"]))
            rr = Replicator()
            rr.add(reader)
            async with connected(rr, seed["port"]):
                await check_reader(reader, 160, size)
                assert reader.byte_length == seed["byteLength"] == 160 * size
                assert (await reader.tree_hash()).hex() == seed["treeHash"]

    run(body)


# --- hyperfs writer -> JS reader -----------------------------------------------------------------


def _expect_clone(result: dict, writer_hash: str, blocks: list[bytes]) -> None:
    assert result["length"] == len(blocks)
    assert result["treeHash"] == writer_hash
    assert result["sha256"] == hashlib.sha256(b"".join(blocks)).hexdigest()


def test_hyperfs_writer_listens_js_reader_dials_with_live_appends(tmp_path: Path) -> None:
    async def body() -> None:
        writer = await open_core(tmp_path / "w")
        await write_interop(writer, 0, 20)
        rw = Replicator()
        rw.add(writer)
        async with serving(rw) as (port, _):
            async with trio.open_nursery() as nursery:

                async def append_later() -> None:
                    await trio.sleep(0.5)
                    for i in range(20, 26):
                        await write_interop(writer, i, i + 1)
                        await trio.sleep(0.05)

                nursery.start_soon(append_later)
                result = await trio.run_process(
                    peer_command("clone", "--storage", str(tmp_path / "js"), "--key", writer.key.hex(),
                                 "--connect", f"127.0.0.1:{port}", "--length", "26", "--verify-content",
                                 "--timeout", "30000"),
                    capture_stdout=True, capture_stderr=True, check=False,
                )
            assert result.returncode == 0, result.stderr.decode()[-2000:]
            _expect_clone(_json(result.stdout), (await writer.tree_hash()).hex(), [interop_block(i) for i in range(26)])

    run(body)


def test_hyperfs_writer_dials_js_reader_listening(tmp_path: Path) -> None:
    async def body() -> None:
        size = 65536
        writer = await open_core(tmp_path / "w")
        await write_interop(writer, 0, 160, size)  # 10 MiB
        rw = Replicator()
        rw.add(writer)
        async with js(
            "listen-clone", "--storage", str(tmp_path / "js"), "--key", writer.key.hex(), "--listen", "0",
            "--length", "162", "--verify-content", "--block-size", str(size), "--timeout", "60000",
        ) as (proc, listening):
            async with connected(rw, listening["port"]):
                await trio.sleep(0.3)
                await write_interop(writer, 160, 162, size)  # live, after connecting
                result = await next_line(proc)
            _expect_clone(result, (await writer.tree_hash()).hex(), [interop_block(i, size) for i in range(162)])

    run(body)


# --- two cores on one connection, carried by a JS mirror --------------------------------------------


def test_two_cores_hyperfs_to_js_mirror_to_hyperfs(tmp_path: Path) -> None:
    async def body() -> None:
        a = await open_core(tmp_path / "a")
        b = await open_core(tmp_path / "b")
        await write_interop(a, 0, 30)
        await write_interop(b, 0, 7, 5000)
        share = Replicator()
        share.add(a)
        share.add(b)
        async with serving(share) as (port, served):
            async with js(
                "mirror", "--storage", str(tmp_path / "js"), "--keys", f"{a.key.hex()},{b.key.hex()}",
                "--connect", f"127.0.0.1:{port}", "--listen", "0", "--timeout", "30000",
            ) as (_, mirror):
                assert {c["key"] for c in mirror["cores"]} == {a.key.hex(), b.key.hex()}
                ra = await open_core(tmp_path / "ra", a.key)
                rb = await open_core(tmp_path / "rb", b.key)
                clone = Replicator()
                clone.add(ra)
                clone.add(rb)
                async with connected(clone, mirror["port"]):
                    await check_reader(ra, 30)
                    await check_reader(rb, 7, 5000)
                    assert len(clone.connections) == 1 and len(clone.connections[0].peers) == 2
                assert await ra.tree_hash() == await a.tree_hash()
                assert await rb.tree_hash() == await b.tree_hash()

    run(body)


def _json(stdout: bytes) -> dict:
    return json.loads(next(line for line in stdout.decode().splitlines() if line.startswith("{")))


def test_hyperfs_writer_truncates_under_a_js_reader(tmp_path: Path) -> None:
    async def body() -> None:
        writer = await open_core(tmp_path / "w")
        await write_interop(writer, 0, 10)
        rw = Replicator()
        rw.add(writer)
        async with serving(rw) as (port, _):
            async with trio.open_nursery() as nursery:

                async def fork_later() -> None:
                    await trio.sleep(1.5)  # the JS reader has the 10 blocks of fork 0 by now
                    await writer.truncate(6)
                    await writer.append([b"fork block %d\n" % i for i in range(6, 12)])

                nursery.start_soon(fork_later)
                result = await trio.run_process(
                    peer_command("clone", "--storage", str(tmp_path / "js"), "--key", writer.key.hex(),
                                 "--connect", f"127.0.0.1:{port}", "--length", "12", "--timeout", "30000"),
                    capture_stdout=True, capture_stderr=True, check=False,
                )
            assert result.returncode == 0, result.stderr.decode()[-2000:]
            clone = _json(result.stdout)
            assert clone["fork"] == writer.fork == 1
            _expect_clone(clone, (await writer.tree_hash()).hex(), [await writer.get(i) for i in range(12)])

    run(body)


SEEK_READER_JS = r"""
const b4a = require('b4a')
const Corestore = require('corestore')
const net = require('net')
const fs = require('fs'), os = require('os'), path = require('path')
async function main () {
  const [key, port, offsets] = process.argv.slice(2)
  const store = new Corestore(fs.mkdtempSync(path.join(os.tmpdir(), 'seekread-')))
  const core = store.get({ key: b4a.from(key, 'hex') })
  await core.ready()
  const sock = net.connect(Number(port), '127.0.0.1')
  sock.pipe(store.replicate(true)).pipe(sock)
  await core.update({ wait: true })
  const seeks = []
  for (const bytes of JSON.parse(offsets)) seeks.push(await core.seek(bytes))
  console.log(JSON.stringify({ length: core.length, seeks }))
  sock.destroy()
  await store.close()
}
main().catch((e) => { console.error(e); process.exit(1) })
"""


def test_js_reader_seeks_in_a_sparse_hyperfs_core(tmp_path: Path) -> None:
    """JS `core.seek()` on a core it holds no block of: it asks us for seek proofs."""

    async def body() -> None:
        writer = await open_core(tmp_path / "w")
        await writer.append([interop_block(i, 1000 + 37 * i) for i in range(40)])
        offsets = [0, 999, 1000, 5000, 20000, 40000, 60000]
        expected = [list(await writer.seek(o)) for o in offsets]
        script = tmp_path / "seekread.js"
        script.write_text(SEEK_READER_JS)
        rw = Replicator()
        rw.add(writer)
        async with serving(rw) as (port, done):
            result = await trio.run_process(
                ["node", str(script), writer.key.hex(), str(port), json.dumps(offsets)],
                capture_stdout=True, capture_stderr=True, check=False,
                env={**os.environ, "NODE_PATH": str(INTEROP_DIR / "node_modules")},
            )
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert _json(result.stdout) == {"length": 40, "seeks": expected}
        assert all(conn.error is None for conn in done)

    run(body)
