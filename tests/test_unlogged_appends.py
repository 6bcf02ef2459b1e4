"""Appends without the write-ahead log (`logged=False`): a SIGKILL loses at most the unlogged
writes since the last logged one, never a logged write or what it depends on, and never what a
peer could have seen."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from hyperfs.core import Corestore
from hyperfs.core.protocol.replicator import store_replicator
from hyperfs.core.storage import CorestoreStorage
from hyperfs.core.storage.rocks import Rocks
from hyperfs.drive.drive import Drive
from tests.drive_store import trio_test
from tests.storage_helpers import ZERO32

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_then_kill(script: str, *args: str) -> list[str]:
    """Run `script` until it prints `ready`, SIGKILL it, and return what it printed before."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == "ready":
                break
            lines.append(line.strip())
        else:
            raise AssertionError(f"the writer exited early: {lines}")
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    return lines


STORAGE_WRITER = """
    import sys, time
    from hyperfs.core.storage import CorestoreStorage, Head
    store = CorestoreStorage(sys.argv[1])
    core = store.create(key=bytes(32), discovery_key=bytes(32))

    def append(start, end, logged):
        tx = core.write(logged=logged)
        for i in range(start, end):
            tx.put_block(i, i.to_bytes(4, "little") * 1024)
        tx.set_head(Head(0, end, bytes(32), None))
        tx.flush()

    append(0, 16, True)
    append(16, 64, False)
    append(64, 80, True)  # depends on blocks 16-63: they must be on disk first
    append(80, 128, False)  # lost by the kill, with its head
    print("ready", flush=True)
    time.sleep(60)
"""


def test_storage_logged_commit_keeps_the_unlogged_ones_before_it(tmp_path):
    folder = str(tmp_path / "store")
    run_then_kill(STORAGE_WRITER, folder)
    store = CorestoreStorage(folder)
    core = store.resume(ZERO32)
    length = core.read().get_head().length
    assert length == 80
    blocks = core.read().get_blocks(list(range(128)))
    assert blocks[:80] == [i.to_bytes(4, "little") * 1024 for i in range(80)]
    assert blocks[80:] == [None] * 48
    store.close()


CORE_WRITER = """
    import sys, time, trio
    from hyperfs.core import Corestore
    from hyperfs.core.protocol.replicator import store_replicator

    async def main(path, shared):
        store = Corestore(path, primary_key=bytes(32))
        await store.ready()
        core = await store.get("log")
        await core.append([b"logged %d" % i for i in range(4)])
        if shared == "shared":
            await store_replicator(store)  # peers may now see the core
        await core.append([b"unlogged %d" % i for i in range(4)], logged=False)
        print(core.length, flush=True)
        print("ready", flush=True)
        await trio.sleep(60)

    trio.run(main, *sys.argv[1:])
"""


@pytest.mark.parametrize("peers, kept", [("alone", 0), ("shared", 4)])
@trio_test
async def test_core_unlogged_append_is_lost_whole_unless_peers_may_see_it(tmp_path, peers, kept):
    path = str(tmp_path / "store")
    assert run_then_kill(CORE_WRITER, path, peers) == ["8"]
    async with Corestore(path, primary_key=bytes(32)) as store:
        core = await store.get("log")
        # Alone, as if never appended: head, tree and bitfield went with the blocks.
        assert core.length == 4 + kept
        assert [await core.get(i) for i in range(4, 4 + kept)] == [b"unlogged %d" % i for i in range(kept)]
        assert [r.errors for r in await store.audit()] == [[]]
        await core.append(b"after the crash")
        assert await core.get(4 + kept) == b"after the crash"


@trio_test
async def test_attaching_a_replicator_makes_unlogged_appends_durable(tmp_path):
    async with Corestore(str(tmp_path / "store"), primary_key=bytes(32)) as store:
        core = await store.get("log")
        await core.append(b"unlogged", logged=False)
        assert store.root.storage.unlogged
        await store_replicator(store)
        assert not store.root.storage.unlogged


MiB = 1024 * 1024


def content(name: str, size: int) -> bytes:
    """The bytes the drive writer streams into file `name` (the test reads them back)."""
    return bytes((i * 7 + len(name)) % 251 for i in range(251)) * (size // 251) + bytes(size % 251)


# The writer process builds the very same content.
DRIVE_WRITER = f"MiB = {MiB}\n" + inspect.getsource(content) + textwrap.dedent(
    """
    import sys, trio
    from hyperfs.core import Corestore
    from hyperfs.drive.drive import Drive

    async def stream(drive, name, size):
        writer = await drive.open_write(name)
        data = content(name, size)
        for offset in range(0, size, MiB):  # 4 MiB appends without the WAL
            await writer.write(data[offset : offset + MiB])
        return writer

    async def main(path):
        store = Corestore(path, primary_key=bytes(32))
        await store.ready()
        drive = await Drive.create(store)
        print(drive.key.hex(), flush=True)
        await (await stream(drive, "/closed.bin", 12 * MiB)).close()
        await stream(drive, "/open.bin", 9 * MiB)  # never closed
        print("ready", flush=True)
        await trio.sleep(60)

    trio.run(main, sys.argv[1])
    """
)


@trio_test
async def test_drive_streamed_file_survives_once_closed(tmp_path):
    path = str(tmp_path / "store")
    (key,) = run_then_kill(DRIVE_WRITER, path)
    async with Corestore(path, primary_key=bytes(32)) as store:
        drive = await Drive.open(store, bytes.fromhex(key))
        assert await drive.read_file("/closed.bin") == content("/closed.bin", 12 * MiB)
        assert await drive.readdir("/") == ["closed.bin"]  # the file still being written is not
        assert [r.errors for r in await store.audit()] == [[], []]


def test_a_write_held_back_by_full_memtables_lets_other_threads_run(tmp_path):
    """Bulk commits faster than RocksDB writes its memtables out: it holds writes back until
    one is on disk. Another thread runs meanwhile (in a mount, the event loop and the hashing)
    and sees the stall, which it could not while the write kept the GIL; every commit lands."""
    rocks = Rocks(str(tmp_path / "db"))
    block = os.urandom(65536)
    keys = [b"block %06d" % i for i in range(4096)]  # 256 MiB, 4 MiB a commit, as a mount streams
    writing = True
    stalls = 0

    def watch() -> None:
        nonlocal stalls
        while writing:
            stalls += rocks._db.property_int_value("rocksdb.is-write-stopped")
            time.sleep(0.0002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for start in range(0, len(keys), 64):
            rocks.commit([(key, block, None) for key in keys[start : start + 64]], logged=False)
    finally:
        writing = False
        watcher.join()
    rocks.close()
    assert stalls > 0
    again = Rocks(str(tmp_path / "db"))
    assert again.live.get_many(keys[::511] + keys[-1:]) == [block] * 10
    again.close()
