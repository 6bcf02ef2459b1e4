"""A drive with a corrupt or hostile entry, mounted and exported: the entry alone is EIO, as a
bad inode is on a local file system, or left out when no path can name it, and the rest stays
usable; a drive whose newest entry is no Node at all does not mount, and says why in one line."""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import subprocess
import time
from pathlib import Path

import trio

from hyperfs.cli.common import DEFAULT_DRIVE, local_drive
from hyperfs.core.corestore import Corestore
from hyperfs.drive.drive import Stat
from tests.drive_store import append_garbage_named_by
from tests.mounting import PYTHON, errno_of, hyperfs, is_mounted, mounted, require_fuse


def make_drive(store: Path, *garbage: tuple[tuple[str, ...] | None, bytes]) -> None:
    """The store's default drive with /a, /dir/b and /dir/sub, then each (names, value) of
    `garbage` appended as is: names None appends the value as a raw metadata block (no Node)."""

    async def build() -> None:
        async with Corestore(str(store)) as cores:
            drive = await local_drive(cores, store, DEFAULT_DRIVE)
            await drive.write_file("/a", b"one\n")
            await drive.write_file("/dir/b", b"two\n")
            await drive.mkdir("/dir/sub")
            for names, value in garbage:
                await drive.metadata.append(value if names is None else drive.tree.put(names, value))
            await drive.flush()

    trio.run(build)


def test_a_corrupt_entry_is_eio_and_its_folder_stays_usable(tmp_path: Path) -> None:
    store = tmp_path / "store"
    short = Stat(mode=stat_mod.S_IFREG | 0o644, size=100, blocks=0)  # its blocks end before its size
    make_drive(store, (("dir", "y"), b"\xff\xfe not a stat"), (("dir", "short"), short.encode()))
    with mounted(store, tmp_path / "mnt") as m:
        folder = m.path / "dir"
        assert sorted(os.listdir(m.path)) == ["a", "dir"]
        assert sorted(os.listdir(folder)) == ["b", "short", "sub", "y"]
        assert os.stat(folder).st_nlink == 3
        assert errno_of(lambda: os.stat(folder / "y")) == errno.EIO
        assert errno_of(lambda: open(folder / "y", "rb")) == errno.EIO
        # `ls -l` lists the folder and says which entry it cannot read, as on ext4.
        done = subprocess.run(["ls", "-l", str(folder)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and "cannot access" in done.stderr and "y" in done.stderr
        assert " b\n" in done.stdout and " sub\n" in done.stdout
        assert (folder / "b").read_bytes() == b"two\n"
        assert os.stat(folder / "short").st_size == 100
        assert errno_of(lambda: (folder / "short").read_bytes()) == errno.EIO  # not 100 zeros
        (folder / "c").write_bytes(b"three\n")
        assert (folder / "c").read_bytes() == b"three\n"
        assert is_mounted(m.path)
    listing = hyperfs(store, "ls", "-l", "default", "/dir", check=False)
    assert listing.returncode == 1 and "metadata entry 4 holds no valid Stat" in listing.stderr
    assert [line.split()[-1] for line in listing.stdout.splitlines()] == ["b", "c", "short", "sub"]
    log = hyperfs(store, "log", "default").stdout.splitlines()
    assert log[3:5] == ["4\tput\t/dir/y\t?", "5\tput\t/dir/short\t100"]
    with mounted(store, tmp_path / "mnt") as m:
        assert (m.path / "dir" / "c").read_bytes() == b"three\n"
        assert errno_of(lambda: os.stat(m.path / "dir" / "y")) == errno.EIO
    # `rm` removes it, which a mount cannot (its lookup is EIO, as on ext4 without fsck).
    hyperfs(store, "rm", "default", "/dir/y")
    with mounted(store, tmp_path / "mnt") as m:
        assert sorted(os.listdir(m.path / "dir")) == ["b", "c", "short", "sub"]


def test_an_index_entry_that_is_no_node_is_left_out_of_its_folder(tmp_path: Path) -> None:
    """/dir's index names a block that is no Node. The folder listed nothing (EIO) before; now
    that entry alone is missing, and the folder reads, takes writes and removals as usual."""
    store = tmp_path / "store"
    make_drive(store)

    async def corrupt() -> None:
        async with Corestore(str(store)) as cores:
            drive = await local_drive(cores, store, DEFAULT_DRIVE)
            st = await drive.write_file("/dir/c", b"three\n")
            await append_garbage_named_by(drive, ("dir", "d"), st.encode())

    trio.run(corrupt)
    with mounted(store, tmp_path / "mnt") as m:
        folder = m.path / "dir"
        assert sorted(os.listdir(folder)) == ["b", "c", "d", "sub"]
        assert os.stat(folder).st_nlink == 3
        assert (folder / "d").read_bytes() == b"three\n"
        (folder / "e").write_bytes(b"five\n")
        (folder / "b").unlink()
        assert subprocess.run(["ls", "-lR", str(m.path)], capture_output=True, timeout=60).returncode == 0
    with mounted(store, tmp_path / "mnt") as m:
        assert sorted(os.listdir(m.path / "dir")) == ["c", "d", "e", "sub"]
    listing = hyperfs(store, "ls", "default", "/dir")
    assert listing.stdout.split() == ["c", "d", "e", "sub"]
    assert "/dir: left out metadata blocks [5]" in listing.stderr
    log = hyperfs(store, "log", "default").stdout.splitlines()
    assert log[4:] == ["5\t?\t?\t?", "6\tput\t/dir/d\t6", "7\tput\t/dir/e\t5", "8\tdel\t/dir/b\t0"]


def test_names_no_path_can_hold_are_neither_listed_nor_exported(tmp_path: Path) -> None:
    """'..', '.', '' and NUL names from a drive's log: a listing with them failed whole
    (EINVAL from the kernel), and `export` followed '.' round in a loop until memory ran out."""
    store, out = tmp_path / "store", tmp_path / "out" / "inner"
    value = Stat(mode=stat_mod.S_IFREG | 0o644).encode()
    make_drive(store, *[(names, value) for names in [("..", "evil"), (".",), ("",), ("dir", "", "e"), ("nul\0",)]])
    with mounted(store, tmp_path / "mnt") as m:
        assert sorted(os.listdir(m.path)) == ["a", "dir"]
        assert sorted(os.listdir(m.path / "dir")) == ["b", "sub"]
    out.mkdir(parents=True)
    done = hyperfs(store, "export", "default", str(out))
    assert "exported 4" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["inner"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["a", "dir", "dir/b", "dir/sub"]


def test_a_drive_whose_newest_block_is_no_node_does_not_mount_and_says_why(tmp_path: Path) -> None:
    require_fuse()
    store, mountpoint = tmp_path / "store", tmp_path / "mnt"
    make_drive(store, (None, b"\xff\xfe not a node"))
    mountpoint.mkdir()
    done = hyperfs(store, "mount", str(mountpoint), check=False)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback or exception group
    assert "metadata block 4 is not a hyperdrive node" in done.stderr and "--checkout" in done.stderr
    assert not is_mounted(mountpoint)
    # The log shows the versions to choose from, and which entry is not one.
    log = hyperfs(store, "log", "default")
    assert log.stdout.splitlines()[-2:] == ["3\tput\t/dir/sub\t0", "4\t?\t?\t?"]
    assert "metadata block 4 is not a hyperdrive node" in log.stderr
    with mounted(store, mountpoint, "--checkout", "4") as m:
        assert (m.path / "dir" / "b").read_bytes() == b"two\n"



# A process that holds the store and writes its default drive, entries good and bad, on stdin
# lines "put PATH", "badstat PATH" (a Node whose value is no Stat), "hostile" (a Node named
# '../evil') and "garbage" (a block that is no Node); it answers "ok" once each is stored.
WRITER = """
import sys, trio
from pathlib import Path
from hyperfs.cli.common import DEFAULT_DRIVE, local_drive, open_store
from hyperfs.drive.drive import Stat

async def main():
    store_dir = Path(sys.argv[1])
    async with open_store(store_dir, "a test's writer") as store:
        drive = await local_drive(store, store_dir, DEFAULT_DRIVE)
        await drive.write_file("/first.txt", b"one")
        await drive.flush()
        print("ready", flush=True)
        async for line in trio.wrap_file(sys.stdin):
            op, _, path = line.strip().partition(" ")
            if op == "put":
                await drive.write_file(path, b"text")
            elif op == "badstat":
                await drive.metadata.append(drive.tree.put((path.strip("/"),), b"\\xff\\xfe"))
            elif op == "hostile":
                await drive.metadata.append(drive.tree.put(("..", "evil"), Stat(mode=0o100644).encode()))
            else:
                await drive.metadata.append(b"\\xff\\xfe not a node")
            await drive.flush()
            print("ok", flush=True)

trio.run(main)
"""


def test_a_following_mount_outlives_corrupt_and_hostile_entries(tmp_path: Path) -> None:
    """A mount that follows its writer (or a peer) reads each change the writer makes to tell
    the kernel what to forget; a change that did not read ended that follower, and the mount
    with it. Now it is logged, and the mount goes on with the entries it can read."""
    store = tmp_path / "store"
    writer = subprocess.Popen([PYTHON, "-c", WRITER, str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def write(line: str) -> None:
        writer.stdin.write(line + "\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "ok"

    def shown(path: Path) -> None:
        deadline = time.monotonic() + 10
        while not path.exists():
            assert time.monotonic() < deadline, f"{path} did not show"
            time.sleep(0.05)

    try:
        assert writer.stdout.readline().strip() == "ready"
        with mounted(store, tmp_path / "mnt") as m:
            assert "read-only" in m.said
            shown(m.path / "first.txt")
            write("badstat /bad")
            write("hostile")
            write("put /later.txt")
            shown(m.path / "later.txt")
            assert sorted(os.listdir(m.path)) == ["bad", "first.txt", "later.txt"]
            assert errno_of(lambda: os.stat(m.path / "bad")) == errno.EIO
            write("garbage")  # the drive's newest entry: nothing new reads any more
            time.sleep(2)
            assert is_mounted(m.path)
            try:
                os.listdir(m.path)  # what the kernel still holds, or EIO: not a dead mount
            except OSError as err:
                assert err.errno == errno.EIO
    finally:
        writer.stdin.close()
        writer.wait(60)
