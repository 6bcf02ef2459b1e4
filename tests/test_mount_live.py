"""A read-only mount that follows its writer, over the wire or in the same store: the folder
shows what the writer adds, changes and removes, without waiting for the kernel's cache
timeouts."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from hyperfs.fuse.mount import LIVE_CACHE_TIMEOUT
from tests.mounting import PYTHON, errno_of, hyperfs, mounted

# The writer: its own store, the default drive, shared on a loopback port; it obeys stdin lines
# "put PATH TEXT" / "rm PATH" and answers "ok" once the change is in its drive.
WRITER = """
import sys, trio
from hyperfs.cli.net_cmds import listen
from hyperfs.core.corestore import Corestore
from hyperfs.core.protocol.replicator import store_replicator
from hyperfs.drive.drive import Drive

async def main():
    store = Corestore(sys.argv[1])
    await store.ready()
    drive = await Drive.create(store, name="default")
    await drive.write_file("/first.txt", b"one")
    await store_replicator(store)
    async with trio.open_nursery() as nursery:
        async def ready(host, port):
            print(drive.key.hex(), f"{host}:{port}", flush=True)
        nursery.start_soon(listen, store, "127.0.0.1:0", ready)
        lines = trio.wrap_file(sys.stdin)
        async for line in lines:
            op, path, *text = line.split()
            if op == "put":
                await drive.write_file(path, " ".join(text).encode())
            else:
                await drive.unlink(path)
            print("ok", flush=True)
        nursery.cancel_scope.cancel()
    await store.close()

trio.run(main)
"""

WAIT = LIVE_CACHE_TIMEOUT * 2 / 3  # less than the cache timeout: only an invalidation shows it


def eventually(check) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, "the mount did not show the writer's change"
        time.sleep(0.1)


def test_read_only_mount_follows_its_writer(tmp_path: Path):
    writer = subprocess.Popen(
        [PYTHON, "-c", WRITER, str(tmp_path / "writer")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def do(line: str) -> None:
        writer.stdin.write(line + "\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "ok"

    try:
        key, address = writer.stdout.readline().split()
        mnt = tmp_path / "mnt"
        with mounted(tmp_path / "reader", mnt, key, "--peer", address):
            first = mnt / "first.txt"
            assert first.read_text() == "one"
            assert not (mnt / "later.txt").exists()  # the kernel now caches "absent"
            assert errno_of(lambda: first.write_text("no")) == 30  # EROFS
            do("put /later.txt two")
            eventually(lambda: (mnt / "later.txt").exists())
            assert (mnt / "later.txt").read_text() == "two"
            do("put /first.txt changed")
            eventually(lambda: first.stat().st_size == len("changed"))
            assert first.read_text() == "changed"
            do("put /deep/er/file.txt three")
            eventually(lambda: "deep" in os.listdir(mnt))
            assert (mnt / "deep" / "er" / "file.txt").read_text() == "three"
            do("rm /later.txt")
            eventually(lambda: not (mnt / "later.txt").exists())
    finally:
        writer.stdin.close()
        writer.wait(timeout=60)


def test_a_mount_of_a_store_another_process_writes_follows_it(tmp_path: Path):
    """While a process holds the store (here a writable mount of it), mounting the store again
    gives a read-only mount that shows what that process writes, as one following a peer does."""
    store = tmp_path / "store"
    with mounted(store, tmp_path / "a") as a:
        (a.path / "first.txt").write_text("one")
        with mounted(store, tmp_path / "b") as b:
            assert b.key == a.key
            assert "read-only: another process writes this store" in b.said
            first = b.path / "first.txt"
            eventually(lambda: first.exists())
            assert first.read_text() == "one"
            assert errno_of(lambda: first.write_text("no")) == 30  # EROFS
            assert not (b.path / "later.txt").exists()  # the kernel now caches "absent"
            (a.path / "later.txt").write_text("two")
            eventually(lambda: (b.path / "later.txt").exists())
            assert (b.path / "later.txt").read_text() == "two"
            big = os.urandom(9 << 20)  # streamed into the drive while written, past the WAL
            (a.path / "deep" / "er").mkdir(parents=True)
            (a.path / "deep" / "er" / "big").write_bytes(big)
            eventually(lambda: "deep" in os.listdir(b.path))
            # The folders come first (the writer's mkdir), the file with its close.
            seen = b.path / "deep" / "er" / "big"
            eventually(lambda: seen.exists() and seen.stat().st_size == len(big))
            assert seen.read_bytes() == big
            (a.path / "later.txt").unlink()
            eventually(lambda: not (b.path / "later.txt").exists())
        (a.path / "after.txt").write_text("the writer goes on")
    with mounted(store, tmp_path / "a") as a:
        assert sorted(os.listdir(a.path)) == ["after.txt", "deep", "first.txt"]


def test_a_mounted_drive_shared_beside_its_mount_reaches_a_peer_live(tmp_path: Path):
    """The main flow: a drive mounted and written, `hyperfs share` run beside the mount (it
    reads the store the mount holds, following it), and a peer mounting the drive over the
    wire sees each file the mount writes, as it writes it."""
    with mounted(tmp_path / "mine", tmp_path / "a") as a:
        (a.path / "first.txt").write_text("one")
        share = subprocess.Popen(
            [PYTHON, "-m", "hyperfs", "--store", str(a.store), "share", "--no-mdns"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert share.stdout.readline().startswith("sharing hyper://")
            address = share.stdout.readline().split()[-1]
            with mounted(tmp_path / "theirs", tmp_path / "b", a.key, "--peer", address) as b:
                eventually(lambda: (b.path / "first.txt").exists())
                assert (b.path / "first.txt").read_text() == "one"
                data = os.urandom(5 << 20)
                (a.path / "later.bin").write_bytes(data)
                eventually(lambda: (b.path / "later.bin").exists() and (b.path / "later.bin").stat().st_size == len(data))
                assert (b.path / "later.bin").read_bytes() == data
        finally:
            share.terminate()
            share.communicate(timeout=60)


def read_or_errno(path: Path) -> bytes | int:
    try:
        return path.read_bytes()
    except OSError as err:
        return err.errno


def shared_files(tmp_path: Path, **files: bytes) -> tuple[str, Callable[[str], tuple[subprocess.Popen, str]]]:
    """A writer's drive holding `files`, and how to share it: (its key, share(address) ->
    (the sharing process, the address it listens on))."""
    writer, src = tmp_path / "writer", tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    key = hyperfs(writer, "create", "mine").stdout.split()[2]
    hyperfs(writer, "import", str(src), "mine", "--quiet")

    def share(address: str) -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen(
            [PYTHON, "-m", "hyperfs", "--store", str(writer), "share", "mine", "--listen", address, "--no-mdns"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert proc.stdout is not None
        return proc, next(line.split()[-1] for line in proc.stdout if line.startswith("listening on"))

    return key, share


def test_random_reads_of_a_file_a_peer_mount_has_not_fetched(tmp_path: Path):
    """A read in the middle of a file nothing of which is fetched yet: a sparse core lacks the
    tree nodes a seek reads, so this was EIO ("tree node 31 is missing"); the block the drive's
    block size points at is fetched first, and its proof brings them."""
    data = os.urandom(3_000_000)
    key, share = shared_files(tmp_path, **{"big.bin": data})
    sharing, address = share("127.0.0.1:0")
    try:
        with mounted(tmp_path / "reader", tmp_path / "mnt", key, "--peer", address) as m:
            fd = os.open(m.path / "big.bin", os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # only the pages asked for
                for offset in (2_000_000, 1_234_567, 2_999_000, 65536 * 7 + 5, 10):
                    assert os.pread(fd, 4096, offset) == data[offset : offset + 4096], offset
            finally:
                os.close(fd)
            assert (m.path / "big.bin").read_bytes() == data
    finally:
        sharing.kill()
        sharing.wait()


def test_a_read_from_a_peer_that_has_gone_fails_in_time_and_works_once_it_is_back(tmp_path: Path):
    """A file not fetched yet, read while its only peer is gone: ETIMEDOUT after --peer-timeout,
    not a reader stuck in the kernel (uninterruptible: Ctrl-C cannot stop it) and a mount that
    cannot unmount. The mount redials, and once the peer is back the same read works. A drive
    the store holds mounts while its peer is unreachable (one it does not hold fails to:
    test_cli_errors' "mount an unreachable peer")."""
    first, second = os.urandom(300_000), os.urandom(300_000)
    key, share = shared_files(tmp_path, **{"first.bin": first, "second.bin": second})
    sharing, address = share("127.0.0.1:0")
    try:
        with mounted(tmp_path / "reader", tmp_path / "mnt", key, "--peer", address, "--peer-timeout", "2") as m:
            assert (m.path / "first.bin").read_bytes() == first
            sharing.kill()
            sharing.wait()
            assert errno_of(lambda: (m.path / "second.bin").read_bytes()) == errno.ETIMEDOUT
            assert (m.path / "first.bin").read_bytes() == first  # what was fetched stays readable
            sharing, _ = share(address)
            deadline = time.monotonic() + WAIT
            while (got := read_or_errno(m.path / "second.bin")) == errno.ETIMEDOUT:
                assert time.monotonic() < deadline, "the peer came back, the read never worked"
            assert got == second
        sharing.kill()
        sharing.wait()
        # The store holds the drive now: with its peer unreachable it still mounts, says so,
        # and shows what it holds.
        with mounted(tmp_path / "reader", tmp_path / "mnt", key, "--peer", address) as m:
            assert f"cannot reach {address} yet" in m.said
            assert (m.path / "second.bin").read_bytes() == second
    finally:
        sharing.kill()
        sharing.wait()


def test_a_mount_with_several_peers_reads_on_when_one_goes(tmp_path: Path):
    """`--peer` repeated: an address nothing answers at is no error while another peer does,
    and once the writer's share goes, a file not fetched yet comes from a seeder instead."""
    first, second = os.urandom(300_000), os.urandom(300_000)
    key, share = shared_files(tmp_path, **{"first.bin": first, "second.bin": second})
    sharing, address = share("127.0.0.1:0")
    seed = subprocess.Popen(
        [PYTHON, "-m", "hyperfs", "--store", str(tmp_path / "seeder"), "seed", key, "--peer", address,
         "--listen", "127.0.0.1:0", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert seed.stdout is not None
        seeder = next(line.split()[-1] for line in seed.stdout if line.startswith("serving on"))
        peers = ("--peer", address, "--peer", seeder, "--peer", "127.0.0.1:9")
        with mounted(tmp_path / "reader", tmp_path / "mnt", key, *peers) as m:
            assert (m.path / "first.bin").read_bytes() == first
            sharing.kill()
            sharing.wait()
            assert (m.path / "second.bin").read_bytes() == second  # else ETIMEDOUT
    finally:
        for proc in (sharing, seed):
            proc.kill()
            proc.wait()
