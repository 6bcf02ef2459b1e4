"""`Drive` on real cores in RocksDB: hyperdrive 9's bytes, files, folders, links, versions."""

from __future__ import annotations

import random
import stat as stat_mod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from hyperfs.core.hypercore import THREAD_BYTES
from hyperfs.core.locking import held
from hyperfs.drive import schema_pb2
from hyperfs.drive.append_tree import decode_paths
from hyperfs.drive.drive import BLOCK_SIZE, Drive, Stat
from hyperfs.errors import (
    DecodingError,
    DirectoryNotEmptyError,
    FileExistsInDrive,
    FileNotFoundInDrive,
    InvalidArgumentError,
    InvalidPathError,
    IsADirectoryInDrive,
    NameTooLongError,
    NotADirectoryInDrive,
    NotSupportedError,
    ReadOnlyDriveError,
    StorageError,
    StorageFullError,
)
from tests.drive_store import append_garbage_named_by, open_store, trio_test
from tests.vectors import load

T = 1700000000000


def _data(spec: object) -> bytes:
    if spec is None or isinstance(spec, str):
        return (spec or "").encode()
    assert spec["size"] == 200000
    return bytes((i * 31 + 7) % 251 for i in range(spec["size"]))


@trio_test
async def test_drive_vector_byte_for_byte(tmp_path: Path) -> None:
    vec = load("drive")
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store, name="vector")
        for step in vec["steps"]:
            before = drive.metadata.length
            op, path = step["op"], step["path"]
            if op == "writeFile":
                await drive.write_file(path, _data(step["data"]), mtime=T, ctime=T)
            elif op == "mkdir":
                await drive.mkdir(path, mtime=T, ctime=T)
            elif op == "unlink":
                await drive.unlink(path)
            else:
                await drive.rmdir(path)
            got = [(await drive.metadata.get(i)).hex() for i in range(before, drive.metadata.length)]
            assert got == step["metadata_blocks_appended"], step
        assert drive.metadata.length == vec["metadata_length"]
        assert drive.content.length == vec["content_length"]
        sizes = [len(await drive.content.get(i)) for i in range(drive.content.length)]
        assert sizes == vec["content_block_sizes"]
        for folder, names in vec["readdir_at_end"].items():
            assert sorted(await drive.readdir(folder)) == names
        for path, want in vec["lstat_at_end"].items():
            st = await drive.lstat(path)
            got = {k: getattr(st, "byte_offset" if k == "byteOffset" else k) for k in want}
            assert got == want, path
        assert await drive.read_file("/big.bin") == _data({"size": 200000})
        assert await drive.read_file("/hello.txt") == b"hello again, longer this time\n"


@trio_test
async def test_reopen_and_read_ranges(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000  # 256000 bytes: 4 blocks
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store, name="d")
        await drive.write_file("/x/f.bin", data, mode=0o600)
        key = drive.key
    async with open_store(tmp_path) as store:
        drive = await Drive.open(store, key)
        assert drive.writable
        st = await drive.stat("x/f.bin")
        assert stat_mod.S_IMODE(st.mode) == 0o600 and st.size == len(data) and st.blocks == 4
        for start, end in ((0, 10), (BLOCK_SIZE - 3, BLOCK_SIZE + 5), (200000, None), (5, 5), (len(data), None)):
            got = b"".join([c async for c in drive.open_read("/x/f.bin", start, end)])
            assert got == data[start:end]
        assert (await Drive.create(store, name="d")).key == key  # create finds the existing drive


@trio_test
async def test_file_reader_reads_a_file_of_unequal_blocks_anywhere(tmp_path: Path) -> None:
    """A peer's drive may cut a file into blocks of any size: a reader's guess of the block a
    byte is in (right for the BLOCK_SIZE blocks this drive writes) is then checked and the
    tree walked instead."""
    rng = random.Random(5)
    sizes = [BLOCK_SIZE // 2, 3, BLOCK_SIZE + 7, 1, BLOCK_SIZE, 0, 2 * BLOCK_SIZE + 11, 999]
    pieces = [rng.randbytes(size) for size in sizes]
    data = b"".join(pieces)
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file("/f", b"before")  # the file's blocks do not start at block 0
        start, start_bytes = drive.content.length, drive.content.byte_length
        await drive.content.append(pieces)
        content = {"offset": start, "byte_offset": start_bytes, "blocks": len(sizes), "size": len(data)}
        await drive._update("/f", lambda st: replace(st, **content))
        reader = await drive.open_reader("/f")
        for _ in range(60):
            offset, size = rng.randrange(len(data) + 10), rng.randrange(1, 2 * BLOCK_SIZE)
            assert await reader.read(offset, size) == data[offset : offset + size], offset


@trio_test
async def test_file_reader_reads_anywhere_in_order_or_not_and_at_once(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(5 * BLOCK_SIZE + 1234)
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file("/f", b"before")  # the file's blocks do not start at block 0
        await drive.write_file("/f", data)
        reader = await drive.open_reader("/f")
        assert reader.size == len(data)
        step = 100_000  # not a multiple of the block size: reads end inside blocks
        assert [await reader.read(o, step) for o in range(0, len(data), step)] == [
            data[o : o + step] for o in range(0, len(data), step)
        ]
        rng = random.Random(4)
        for _ in range(30):
            offset, size = rng.randrange(len(data) + 10), rng.randrange(1, 3 * BLOCK_SIZE)
            assert await reader.read(offset, size) == data[offset : offset + size]
        got: dict[int, bytes] = {}

        async def read(offset: int) -> None:
            got[offset] = await reader.read(offset, BLOCK_SIZE)

        async with trio.open_nursery() as nursery:  # the kernel asks for several pieces at once
            for offset in range(0, len(data), BLOCK_SIZE):
                nursery.start_soon(read, offset)
        assert b"".join(got[o] for o in sorted(got)) == data
        await drive.write_file("/f", b"after")
        assert await reader.read(0, 10) == data[:10]  # the file as it was when opened
        with pytest.raises(IsADirectoryInDrive):
            await drive.open_reader("/")


@trio_test
async def test_files_folders_errors(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.mkdir("/d")
        await drive.write_file("/d/a", b"A")
        refused = [
            (FileExistsInDrive, drive.mkdir, "/d"),
            (DirectoryNotEmptyError, drive.rmdir, "/d"),
            (IsADirectoryInDrive, drive.unlink, "/d"),
            (IsADirectoryInDrive, drive.write_file, "/d", b""),
            (NotADirectoryInDrive, drive.write_file, "/d/a/b", b""),
            (NotADirectoryInDrive, drive.readdir, "/d/a"),
            (FileNotFoundInDrive, drive.lstat, "/nope"),
            (FileNotFoundInDrive, drive.unlink, "/nope"),
        ]
        for error, method, *args in refused:
            with pytest.raises(error):
                await method(*args)
        for bad in ("/a/../b", "/a\0b", "/a//b"):
            with pytest.raises(InvalidPathError):
                await drive.write_file(bad, b"")
        with pytest.raises(NameTooLongError):
            await drive.write_file("/" + "é" * 128, b"")
        await drive.write_file("/" + "é" * 127, b"ok")  # 254 bytes
        await drive.unlink("/d/a")
        assert await drive.readdir("/d") == []
        await drive.rmdir("/d")
        assert not await drive.exists("/d")
        assert (await drive.lstat("/")).is_dir()
        await drive.write_file("/implicit/f", b"", mtime=1234)
        st = await drive.lstat("/implicit")  # a folder without a node of its own
        assert st.is_dir() and st.mtime == 1234


@trio_test
async def test_rename_symlink_xattr_attrs(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file("/src/deep/f", b"content")
        await drive.mkdir("/src/empty")
        content_length = drive.content.length
        await drive.rename("/src", "/dst")
        assert drive.content.length == content_length  # no content copied
        assert await drive.read_file("/dst/deep/f") == b"content"
        assert sorted(await drive.readdir("/dst")) == ["deep", "empty"]
        assert not await drive.exists("/src")
        await drive.rename("/dst/deep/f", "/g")
        assert await drive.read_file("/g") == b"content"
        # /dst/deep only existed through f (no node of its own, as hyperdrive 9 writes): gone now.
        assert await drive.readdir("/dst") == ["empty"]

        await drive.symlink("g", "/link")
        assert await drive.readlink("/link") == "g"
        assert (await drive.lstat("/link")).is_symlink()
        assert (await drive.stat("/link")).size == 7
        assert await drive.read_file("/link") == b"content"

        await drive.set_metadata("/g", "user.k", b"v")
        assert await drive.get_metadata("/g") == {"user.k": b"v"}
        await drive.chmod("/g", 0o600)
        await drive.chown("/g", 7, 8)
        await drive.utimes("/g", None, 1234)
        st = await drive.lstat("/g")
        assert (stat_mod.S_IMODE(st.mode), st.uid, st.gid, st.mtime, st.metadata) == (0o600, 7, 8, 1234, {"user.k": b"v"})
        await drive.set_metadata("/g", "user.k", None)
        assert await drive.get_metadata("/g") == {}
        # Stat's fields are uint64 times and uint32 ids: a value one cannot hold is refused
        # with a clear error, and nothing is written.
        version = drive.version
        with pytest.raises(InvalidArgumentError, match="out of range"):
            await drive.utimes("/g", None, -1)
        with pytest.raises(InvalidArgumentError, match="out of range"):
            await drive.chown("/g", 1 << 32, 0)
        assert ((await drive.lstat("/g")).mtime, (await drive.lstat("/g")).uid, drive.version) == (1234, 7, version)

        await drive.truncate("/g", 3)
        assert await drive.read_file("/g") == b"con"
        await drive.truncate("/g", 5)
        assert await drive.read_file("/g") == b"con\0\0"
        assert stat_mod.S_IMODE((await drive.lstat("/g")).mode) == 0o600
        # A file made longer than the disk holds fails before a single zero is stored, not
        # once they have filled the disk.
        content, version = drive.content.length, drive.version
        with pytest.raises(StorageFullError, match="do not fit"):
            await drive.truncate("/g", 1 << 50)
        assert (drive.content.length, drive.version, await drive.read_file("/g")) == (content, version, b"con\0\0")


@trio_test
async def test_fifos_and_sockets_are_entries_without_content(tmp_path: Path) -> None:
    """A FIFO or a socket is a node with its type in `mode`, no content, the attributes of
    any entry; reading one as a file is an error; a device node is refused."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file("/f", b"content")
        content = drive.content.length
        await drive.mknod("/run/pipe", stat_mod.S_IFIFO | 0o640, uid=5, gid=6, mtime=T)
        await drive.mknod("/run/agent", stat_mod.S_IFSOCK | 0o7777)
        assert drive.content.length == content  # nothing appended but their nodes
        pipe = await drive.lstat("/run/pipe")
        assert (pipe.mode, pipe.uid, pipe.gid, pipe.mtime, pipe.size) == (stat_mod.S_IFIFO | 0o640, 5, 6, T, 0)
        assert (pipe.kind(), (await drive.stat("/run/agent")).kind(), (await drive.lstat("/f")).kind()) == (
            "FIFO",
            "socket",
            "file",
        )
        assert pipe.is_special() and not (pipe.is_file() or pipe.is_dir() or pipe.is_symlink())
        assert sorted(await drive.readdir("/run")) == ["agent", "pipe"]
        with pytest.raises(InvalidArgumentError, match="/run/pipe is a FIFO, not a file"):
            await drive.read_file("/run/pipe")
        await drive.symlink("run/agent", "/link")
        with pytest.raises(InvalidArgumentError, match="/run/agent is a socket"):
            await drive.read_file("/link")
        with pytest.raises(FileExistsInDrive):
            await drive.mknod("/f", stat_mod.S_IFIFO | 0o600)
        with pytest.raises(NotADirectoryInDrive):
            await drive.mknod("/f/pipe", stat_mod.S_IFIFO | 0o600)
        for device in (stat_mod.S_IFCHR, stat_mod.S_IFBLK, stat_mod.S_IFREG, stat_mod.S_IFDIR):
            with pytest.raises(NotSupportedError):
                await drive.mknod("/dev", device | 0o600)
        assert not await drive.exists("/dev")

        await drive.chmod("/run/pipe", 0o600)
        await drive.set_metadata("/run/pipe", "user.k", b"v")
        await drive.rename("/run/pipe", "/pipe")
        pipe = await drive.lstat("/pipe")
        assert (pipe.mode, pipe.metadata) == (stat_mod.S_IFIFO | 0o600, {"user.k": b"v"})
        await drive.unlink("/run/agent")
        assert await drive.readdir("/") == ["f", "link", "pipe"] and not await drive.exists("/run")
        # As for a symlink, a file written at its path replaces it.
        await drive.write_file("/pipe", b"a file now")
        assert (await drive.lstat("/pipe")).kind() == "file" and await drive.read_file("/pipe") == b"a file now"


@trio_test
async def test_folder_counts_stay_right_within_the_bounds_of_their_caches(tmp_path: Path) -> None:
    """A folder's link count (2 + its subfolders) comes from caches of folder facts, kept
    within bounds: with room for a few folders only, every count is still right, before and
    after changes, and the caches keep to their bounds."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        bound = 5_000
        drive._subfolders.max_bytes = drive._folder_entries.max_bytes = bound
        async with drive.batch():
            for a in range(40):
                for b in range(a % 4):
                    await drive.mkdir(f"/a{a}/b{b}")
                await drive.write_file(f"/a{a}/file", b"x")
        for _ in range(2):
            for a in range(40):
                assert (await drive.lstat(f"/a{a}")).nlink == 2 + a % 4
            assert (await drive.lstat("/")).nlink == 42
            assert drive._subfolders.bytes <= bound and drive._folder_entries.bytes <= bound
        for a in range(0, 40, 3):  # a new subfolder in a0, a3, ...; one fewer in a1, a4, ...
            await drive.mkdir(f"/a{a}/new")
            if a + 1 < 40 and (a + 1) % 4:
                await drive.rmdir(f"/a{a + 1}/b0")
        for a in range(40):
            expected = 2 + a % 4 + (a % 3 == 0) - (a % 3 == 1 and a % 4 > 0)
            assert (await drive.lstat(f"/a{a}")).nlink == expected, a
        assert drive._subfolders.bytes <= bound and drive._folder_entries.bytes <= bound


@trio_test
async def test_versions_checkout_history_diff(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file("/a", b"1")
        v = drive.version
        await drive.write_file("/a", b"2")
        await drive.write_file("/b", b"3")
        old = await drive.checkout(v)
        assert await old.read_file("/a") == b"1" and not await old.exists("/b")
        assert not old.writable
        with pytest.raises(ReadOnlyDriveError):
            await old.write_file("/c", b"")
        assert [(c.type, c.name) for c in await drive.history()] == [("put", "/a")] * 2 + [("put", "/b")]
        changes = {(c.type, c.name, c.version) for c in await drive.diff(v)}
        assert changes == {("put", "/a", 2), ("put", "/b", 3), ("del", "/a", 1)}


@trio_test
async def test_batch_one_append_and_streaming_writer(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        length = drive.metadata.length
        async with drive.batch():
            for i in range(50):
                await drive.write_file(f"/many/f{i}", b"x" * i)
            assert drive.metadata.length == length  # nothing appended yet
            assert sorted(await drive.readdir("/many")) == sorted(f"f{i}" for i in range(50))
        assert drive.metadata.length == length + 50
        assert await drive.read_file("/many/f49") == b"x" * 49

        big = bytes(range(251)) * 40000
        async with await drive.open_write("/stream") as writer:
            for i in range(0, len(big), 10007):
                await writer.write(big[i : i + 10007])
        assert await drive.read_file("/stream") == big
        assert (await drive.lstat("/stream")).blocks == -(-len(big) // BLOCK_SIZE)


@trio_test
async def test_grouped_appends_what_it_gathered_after_the_delay(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        length = drive.metadata.length
        async with drive.grouped(1.0):
            for i in range(5):
                await drive.write_file(f"/g/f{i}", b"y" * i)
            await drive.mkdir("/g/sub")
            assert drive.metadata.length == length  # gathered, not appended yet
            assert (await drive.lstat("/g/f4")).size == 4
            assert sorted(await drive.readdir("/g")) == ["f0", "f1", "f2", "f3", "f4", "sub"]
            with trio.fail_after(30):
                await drive.wait_version(length)
            assert drive.metadata.length == length + 6  # all of them, in one append

            await drive.write_file("/g/synced", b"z")
            await drive.flush()  # an fsync does not wait for the delay
            assert drive.metadata.length == length + 7
            await drive.write_file("/g/last", b"!")
        assert drive.metadata.length == length + 8  # the end of the group appends what is left
        assert await drive.read_file("/g/last") == b"!"


@trio_test
async def test_a_read_waits_for_the_append_its_content_is_in(tmp_path: Path) -> None:
    """A file read while a batch holding its content is being appended (the queue already
    taken, the content core not yet longer) waits for that append instead of failing."""
    data = bytes(range(256)) * 4096
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        async with drive.batch(), trio.open_nursery() as nursery:
            await drive.write_file("/f", data)
            nursery.start_soon(drive.flush_pending)
            await trio.sleep(0)  # the append has taken the queue and waits on its worker thread
            assert await drive.read_file("/f") == data


@trio_test
async def test_a_cancelled_append_loses_nothing(tmp_path: Path) -> None:
    """An append cancelled once it took the queue (a mount's grouped appender, at unmount)
    still appends what it took."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        async with drive.batch():
            await drive.write_file("/queued", b"q")
            with trio.CancelScope() as scope:
                scope.cancel()
                await drive.flush_pending()
        assert await drive.read_file("/queued") == b"q"
        assert (await Drive.open(store, drive.key)).version == drive.version


@trio_test
async def test_a_failed_grouped_append_is_raised_by_the_next_flush(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file("/kept", b"k")
        async with drive.grouped(0.5):
            await drive.write_file("/lost", b"l")
            await drive.content.close()  # so the append of its content fails
            with trio.fail_after(30):
                while drive._append_failure is None:
                    await trio.sleep(0.01)
            assert not await drive.exists("/lost")  # the tree follows the log again
            with pytest.raises(StorageError, match="lost"):
                await drive.flush()
            await drive.flush()  # reported once
        assert (await drive.lstat("/kept")).size == 1


@trio_test
async def test_writer_reads_back_what_it_took(tmp_path: Path) -> None:
    """FileWriter.read answers any range of what was written so far: blocks in the content core,
    blocks still queued, the unfinished tail, and after another file's content moved its run."""
    rng = random.Random(3)
    big = rng.randbytes(9 * BLOCK_SIZE + 1234)
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        writer = await drive.open_write("/growing")
        ranges = [(0, 10), (BLOCK_SIZE - 5, 10), (0, len(big) + 50), (len(big) - 3, 10), (5 * BLOCK_SIZE, BLOCK_SIZE)]
        for i in range(0, len(big), 70001):
            await writer.write(big[i : i + 70001])
            taken = big[: i + 70001]
            assert writer.size == len(taken)
            for start, size in ranges:
                assert await writer.read(start, size) == taken[start : start + size], (i, start)
            if i == 70001:
                await drive.write_file("/other", b"o" * (2 * BLOCK_SIZE))  # lands after its blocks
        assert await writer.read(len(big), 10) == b""
        await writer.close()
        assert await drive.read_file("/growing") == big
        assert await drive.read_file("/other") == b"o" * (2 * BLOCK_SIZE)


@trio_test
async def test_reader_follows_writer(tmp_path: Path) -> None:
    """A second session of the same drive (read-only checkout aside) sees new versions."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file("/a", b"1")
        version = drive.version
        async with trio.open_nursery() as nursery:
            seen: list[int] = []

            async def watch() -> None:
                seen.append(await drive.wait_version(version))

            nursery.start_soon(watch)
            await trio.sleep(0)
            await drive.write_file("/b", b"2")
        assert seen == [version + 1]


@trio_test
async def test_corrupt_metadata_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """A metadata block that is no Node (or not even protobuf) gives DecodingError, and the
    drive still answers what came before it through a checkout."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file("/a", b"1")
        version = drive.version
        await drive.metadata.append(b"\xff\xfe not a node")
        with pytest.raises(DecodingError):
            await drive.lstat("/a")
        assert await (await drive.checkout(version)).read_file("/a") == b"1"
        await drive.flush()  # durable: the write-ahead log is synced

    async with open_store(tmp_path / "2") as store:
        drive = await Drive.create(store)
        hostile = Stat(mode=stat_mod.S_IFREG | 0o644, size=10, blocks=5, offset=1000)
        await drive.metadata.append(drive.tree.put(("x",), hostile.encode()))
        with pytest.raises(DecodingError):
            await drive.read_file("/x")  # instead of waiting forever for blocks nobody has


@trio_test
async def test_a_corrupt_stat_fails_only_its_own_entry(tmp_path: Path) -> None:
    """A Node whose value is no Stat: its own lookup is a DecodingError, but its folder, the
    folders above (whose times and link counts come from their entries) and its siblings
    still stat and list."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.mkdir("/dir")
        await drive.mkdir("/dir/sub")
        await drive.write_file("/dir/b", b"two")
        for garbage in (b"\xff\xfe not a stat", b"\x08\xff\xff\x7f but no stat after it"):
            await drive.metadata.append(drive.tree.put(("dir", "y"), garbage))
            with pytest.raises(DecodingError):
                await drive.lstat("/dir/y")
            assert (await drive.lstat("/")).is_dir()
            assert (await drive.lstat("/dir")).nlink == 3  # sub's `..`; y is no folder
            assert sorted(await drive.readdir("/dir")) == ["b", "sub", "y"]
            assert await drive.read_file("/dir/b") == b"two"
        await drive.unlink("/dir/y")  # what mends it: nothing else reads it
        assert sorted(await drive.readdir("/dir")) == ["b", "sub"]
        with pytest.raises(FileNotFoundInDrive):
            await drive.unlink("/dir/y")
        # A folder's own corrupt node: removing it leaves the folder as its entries imply it.
        await drive.metadata.append(drive.tree.put(("dir",), b"\xff\xfe not a stat"))
        with pytest.raises(DecodingError):
            await drive.lstat("/dir")
        await drive.unlink("/dir")
        assert (await drive.lstat("/dir")).is_dir() and await drive.read_file("/dir/b") == b"two"


@trio_test
async def test_an_index_entry_that_is_no_node_fails_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A folder's index names a block that is no Node (a hostile writer, a bad disk): its
    name cannot be known, so it is left out, and the folder's other entries still list,
    stat and read. A write into the folder keeps naming the block, as the index did."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.mkdir("/dir/sub")
        st = await drive.write_file("/dir/a", b"one")
        garbage = await append_garbage_named_by(drive, ("dir", "b"), st.encode())

    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        assert await drive.readdir("/dir") == ["sub", "a", "b"]
        assert f"/dir: left out metadata blocks [{garbage}]" in caplog.text  # where someone reads it
        assert (await drive.lstat("/dir")).nlink == 3
        assert await drive.read_file("/dir/b") == b"one"
        assert sorted(await drive.readdir("/")) == ["dir"]
        await drive.write_file("/dir/c", b"three")
        await drive.unlink("/dir/a")
        assert await drive.readdir("/dir") == ["sub", "b", "c"]
        assert garbage in decode_paths(drive.version - 1, drive.tree.head.paths)[1]
        changes = await drive.diff(garbage)
        assert sorted((c.type, c.name) for c in changes) == [("del", "/dir/a"), ("put", "/dir/b"), ("put", "/dir/c")]


@trio_test
async def test_a_file_whose_blocks_end_before_its_size_is_an_error(tmp_path: Path) -> None:
    """A Stat that claims more bytes than its blocks hold: a read short of its size would pass
    for the end of the file (and a mount's kernel fills it up with zeros), so it fails."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        st = await drive.write_file("/f", b"0123456789")
        for name, blocks in (("longer", st.blocks), ("no-blocks", 0)):
            claims = replace(st, size=100, blocks=blocks)
            await drive.metadata.append(drive.tree.put((name,), claims.encode()))
            with pytest.raises(DecodingError, match="end before its size"):
                await drive.read_file(f"/{name}")
            reader = await drive.open_reader(f"/{name}")
            with pytest.raises(DecodingError):
                await reader.read(5, 10)
        assert await drive.read_file("/f") == b"0123456789"


@trio_test
async def test_names_no_path_can_hold_are_left_out_of_listings(tmp_path: Path) -> None:
    """A log may name anything: '..', '.', NUL, over 255 bytes, and append-tree splits 'a//b'
    into an empty name. Listings leave those entries out (and folder link counts too), so no
    walk of the drive is led above its folder or round in a loop."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        st = await drive.write_file("/ok", b"1")
        hostile = [("..", "evil"), (".",), (".", "dot"), ("",), ("a", "", "b"), ("nul\0",), ("x", "..", "..", "evil")]
        for names in [*hostile, ("a", "..", "d", "sub"), ("n" * 256,)]:
            await drive.metadata.append(drive.tree.put(names, st.encode()))
        assert sorted(await drive.readdir("/")) == ["a", "ok", "x"]
        assert await drive.readdir("/a") == [] and await drive.readdir("/x") == []
        assert (await drive.lstat("/")).nlink == 4 and (await drive.lstat("/a")).nlink == 2
        assert await drive.read_file("/ok") == b"1"


@trio_test
async def test_a_core_that_is_no_drive_does_not_open_as_one(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        for name, index in [
            ("garbage", lambda key: b"\xff\xfe"),
            ("hypertrie", lambda key: schema_pb2.Index(type="hypertrie", content=key).SerializeToString()),
            ("itself", lambda key: schema_pb2.Index(type="hyperdrive", content=key).SerializeToString()),
        ]:
            core = await store.get(name=name)
            await core.ready()
            await core.append(index(core.key))
            with pytest.raises(DecodingError, match="not a hyperdrive|its own metadata core"):
                await Drive.open(store, core.key)
        empty = await store.get(name="empty")
        await empty.ready()
        with pytest.raises(FileNotFoundInDrive, match="no index block"):
            await Drive.open(store, empty.key)


@trio_test
async def test_very_deep_paths(tmp_path: Path) -> None:
    """2,000 levels (a 4 KiB path): no recursion limit in lookups, renames or listings."""
    deep = "/" + "/".join(["d"] * 2000)
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file(deep + "/f", b"bottom")
        await drive.rename("/d", "/e")
        fresh = await Drive.open(store, drive.key)
        assert await fresh.read_file("/e" + deep[2:] + "/f") == b"bottom"
        assert await fresh.readdir("/") == ["e"]


@trio_test
async def test_folder_nlink_counts_subfolders(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        assert (await drive.lstat("/")).nlink == 2
        await drive.mkdir("/a")
        await drive.mkdir("/a/empty")
        await drive.write_file("/a/implicit/f", b"x")  # a folder only through its file
        await drive.write_file("/a/file", b"y")
        await drive.symlink("empty", "/a/link")
        assert (await drive.lstat("/")).nlink == 3
        assert (await drive.lstat("/a")).nlink == 4
        assert (await drive.lstat("/a/empty")).nlink == 2
        assert (await drive.lstat("/a/implicit")).nlink == 2
        assert (await drive.lstat("/a/file")).nlink == 1
        await drive.rmdir("/a/empty")
        await drive.rename("/a/implicit", "/moved")
        assert (await drive.lstat("/a")).nlink == 2
        assert (await drive.lstat("/")).nlink == 4


@trio_test
async def test_a_writer_closed_after_its_folder_moved_names_the_node_where_it_is_then(tmp_path: Path) -> None:
    """A mount's file whose folder is renamed while it is written: `close(path=...)` reads the
    name once the drive's lock is held, so the Node lands in the moved folder, not in a
    folder of the old name made again by it."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.mkdir("/d")
        writer = await drive.open_write("/d/f")
        await writer.write(b"x" * (BLOCK_SIZE + 10))
        where = {"path": "/d/f"}
        await drive.rename("/d", "/e", moved=lambda: where.update(path="/e/f"))
        await writer.close(path=lambda: where["path"])
        assert await drive.read_file("/e/f") == b"x" * (BLOCK_SIZE + 10)
        assert not await drive.exists("/d")


@trio_test
async def test_attribute_changes_and_a_writer_closing_at_once_keep_both(tmp_path: Path) -> None:
    """chmod, chown, utimes and xattrs change a path's newest Node, and a writer's close gives it
    the file's new content: whichever takes the drive's lock first, the Node that stays has the
    new content and every attribute. (A mount met this: an append lost to an xattr set while
    the appending process closed the file.)"""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file("/f", b"old")
        for change_first in (False, True):
            writer = await drive.open_write("/f")
            await writer.write(b"new content")
            async with trio.open_nursery() as nursery:
                async with held(drive._lock):  # both read what they need, then wait for the lock
                    if not change_first:
                        nursery.start_soon(writer.close)
                        await trio.testing.wait_all_tasks_blocked()
                    nursery.start_soon(drive.set_metadata, "/f", f"user.{change_first}", b"v")
                    nursery.start_soon(drive.chmod, "/f", 0o600 + change_first)
                    await trio.testing.wait_all_tasks_blocked()
                    if change_first:
                        nursery.start_soon(writer.close)
                        await trio.testing.wait_all_tasks_blocked()
            assert await drive.read_file("/f") == b"new content"
            st = await drive.lstat("/f")
            assert st.mode & 0o777 == 0o600 + change_first
            assert st.metadata.get(f"user.{change_first}") == b"v"
            assert st.metadata.get("user.False") == b"v"  # kept by the later writer too


@trio_test
async def test_truncate_cuts_the_content_a_writer_put_meanwhile(tmp_path: Path) -> None:
    """A truncate rewrites the bytes it keeps: when a writer puts new content while it reads
    the old, it cuts the new content instead of putting back the old. It follows symlinks."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file("/f", b"old content")
        await drive.symlink("f", "/link")
        writer = await drive.open_write("/f")
        await writer.write(b"new content")
        async with trio.open_nursery() as nursery:
            async with held(drive._lock):  # the writer waits to put its Node, then the truncate
                nursery.start_soon(writer.close)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(drive.truncate, "/f", 5)
                await trio.testing.wait_all_tasks_blocked()
        assert await drive.read_file("/f") == b"new c"
        assert (await drive.lstat("/link")).is_symlink()
        await drive.truncate("/link", 7)
        assert await drive.read_file("/f") == b"new c\0\0"


@trio_test
async def test_attribute_changes_name_their_file_once_the_lock_is_held(tmp_path: Path) -> None:
    """Given a function for the path (a mount's inode), set_attributes and set_metadata name
    their file once they hold the drive's lock: the file a rename moved while they waited is
    the one changed, not the one that took its name. A change to what is there already appends
    nothing."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file("/a", b"a")
        await drive.write_file("/b", b"b")
        where = {"a": "/a"}
        async with trio.open_nursery() as nursery:
            async with held(drive._lock):  # the swap waits first, the changes behind it
                nursery.start_soon(drive.exchange, "/a", "/b", lambda: where.update(a="/b"))
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(lambda: drive.set_attributes(lambda: where["a"], mode=0o600, mtime=5))
                nursery.start_soon(drive.set_metadata, lambda: where["a"], "user.k", b"v")
                await trio.testing.wait_all_tasks_blocked()
        moved, other = await drive.lstat("/b"), await drive.lstat("/a")
        assert await drive.read_file("/b") == b"a"
        assert (stat_mod.S_IMODE(moved.mode), moved.mtime, moved.metadata) == (0o600, 5, {"user.k": b"v"})
        assert (stat_mod.S_IMODE(other.mode), other.metadata) == (0o644, {})
        version = drive.version
        await drive.set_attributes("/b", mode=0o600, mtime=5)
        await drive.set_metadata("/b", "user.k", b"v")
        await drive.set_metadata("/a", "user.absent", None)
        assert drive.version == version


@trio_test
async def test_name_changes_check_the_tree_they_change(tmp_path: Path) -> None:
    """mkdir, symlink, rename, exchange, unlink and rmdir check the tree under the drive's lock:
    a file a writer put while they waited for it is seen, not overwritten unchecked."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.mkdir("/d")
        await drive.mkdir("/e")
        await drive.write_file("/e/in", b"y")
        writer = await drive.open_write("/x")
        await writer.write(b"x")
        outcomes: dict[str, BaseException | None] = {}

        async def attempt(name: str, change: Any, *args: str) -> None:
            try:
                await change(*args)
                outcomes[name] = None
            except Exception as err:  # noqa: BLE001 - what each met is the test
                outcomes[name] = err

        async with trio.open_nursery() as nursery:
            async with held(drive._lock):  # the writer's close goes first, the rest wait behind it
                nursery.start_soon(writer.close)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(attempt, "mkdir", drive.mkdir, "/x")
                nursery.start_soon(attempt, "symlink", drive.symlink, "t", "/x")
                nursery.start_soon(attempt, "rename", drive.rename, "/d", "/x")
                nursery.start_soon(attempt, "rmdir", drive.rmdir, "/x")
                await trio.testing.wait_all_tasks_blocked()
        assert isinstance(outcomes["mkdir"], FileExistsInDrive)
        assert isinstance(outcomes["symlink"], FileExistsInDrive)
        assert isinstance(outcomes["rename"], NotADirectoryInDrive)
        assert isinstance(outcomes["rmdir"], NotADirectoryInDrive)
        assert await drive.read_file("/x") == b"x" and (await drive.lstat("/d")).is_dir()


@trio_test
async def test_exchange_swaps_files_symlinks_and_folders(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file("/f", b"file")
        await drive.mkdir("/d")
        await drive.write_file("/d/x", b"x")
        await drive.write_file("/d/sub/y", b"y")
        await drive.write_file("/i/z", b"z")  # a folder only through its file
        await drive.symlink("f", "/l")
        content_length = drive.content.length
        await drive.exchange("/f", "/d")  # a file and a folder
        assert await drive.read_file("/d") == b"file"
        assert sorted(await drive.readdir("/f")) == ["sub", "x"] and await drive.read_file("/f/sub/y") == b"y"
        await drive.exchange("/i", "/l")  # an implicit folder and a symlink
        assert await drive.readlink("/i") == "f" and await drive.readdir("/l") == ["z"]
        await drive.exchange("/l", "/f")  # two folders
        assert sorted(await drive.readdir("/l")) == ["sub", "x"] and await drive.read_file("/f/z") == b"z"
        assert (await drive.lstat("/")).nlink == 4 and (await drive.lstat("/l")).nlink == 3
        assert drive.content.length == content_length  # names move, content stays
        with pytest.raises(InvalidPathError):
            await drive.exchange("/l", "/l/sub")
        with pytest.raises(FileNotFoundInDrive):
            await drive.exchange("/l", "/missing")
        # A drive reading the same log from scratch finds the same tree.
        fresh = await Drive.open(store, drive.key)
        for folder in ["/", "/l", "/l/sub", "/f"]:
            assert await fresh.readdir(folder) == await drive.readdir(folder)
        for path in ["/d", "/f", "/f/z", "/i", "/l", "/l/x", "/l/sub", "/l/sub/y"]:
            ours, theirs = await drive.lstat(path), await fresh.lstat(path)
            assert (ours.mode, ours.size, ours.nlink, ours.linkname) == (theirs.mode, theirs.size, theirs.nlink, theirs.linkname)


@trio_test
async def test_folder_nlink_carried_across_changes_matches_a_fresh_count(tmp_path: Path) -> None:
    """The counts carried across puts and deletions agree with ones counted from scratch by a
    drive that opens the same log, whatever the mix of files, folders, implicit folders (made
    and emptied), links and swaps."""
    rng = random.Random(11)
    folders = ["/", "/a", "/a/b", "/c"]
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        for step in range(150):
            folder = rng.choice(folders)
            path = folder.rstrip("/") + f"/n{rng.randrange(6)}"
            op = rng.choice(["mkdir", "file", "deep", "link", "chmod", "remove", "rmdir", "undeep", "swap"])
            try:
                if op == "mkdir":
                    await drive.mkdir(path)
                elif op == "file":
                    await drive.write_file(path, b"f")
                elif op == "deep":
                    await drive.write_file(path + "/inner/f", b"d")  # folders only through a file
                elif op == "link":
                    await drive.symlink("n0", path)
                elif op == "chmod":
                    await drive.chmod(path, 0o700)
                elif op == "rmdir":
                    await drive.rmdir(path)
                elif op == "undeep":
                    await drive.unlink(path + "/inner/f")  # the implicit folders go with it
                elif op == "swap":
                    await drive.exchange(path, rng.choice(folders).rstrip("/") + f"/n{rng.randrange(6)}")
                elif (await drive.lstat(path)).is_dir():
                    await drive.rename(path, folder.rstrip("/") + f"/moved{step}")
                else:
                    await drive.unlink(path)
            except (
                FileExistsInDrive,
                FileNotFoundInDrive,
                IsADirectoryInDrive,
                NotADirectoryInDrive,
                DirectoryNotEmptyError,
                InvalidPathError,  # a swap of a folder with something inside it
            ):
                pass
            fresh = await Drive.open(store, drive.key)
            for name in folders:
                try:
                    carried = (await drive.lstat(name)).nlink
                except (FileNotFoundInDrive, NotADirectoryInDrive):
                    continue
                assert carried == (await fresh.lstat(name)).nlink, (step, op, path, name)


@trio_test
async def test_drive_opened_from_a_peer_lists_without_a_clone(tmp_path: Path) -> None:
    from hyperfs.core.protocol.replicator import store_replicator
    from tests.test_replicator import connected, serving

    async with open_store(tmp_path / "w") as writer, open_store(tmp_path / "r") as reader:
        source = await Drive.create(writer)
        for i in range(20):
            await source.write_file(f"/d{i % 3}/f{i}", b"%d" % i)
        with trio.fail_after(30):
            async with serving(writer) as (port, _), connected(await store_replicator(reader), port):
                drive = await Drive.open(reader, source.key)
                assert not drive.writable
                assert sorted(await drive.readdir("/")) == ["d0", "d1", "d2"]
                assert sorted(await drive.readdir("/d1")) == sorted(f"f{i}" for i in range(1, 20, 3))
                assert await drive.read_file("/d2/f17") == b"17"
                await source.write_file("/later", b"new")
                await drive.wait_version(drive.version)
                assert await drive.read_file("/later") == b"new"


@trio_test
async def test_a_peer_drive_shows_what_it_holds_while_newer_entries_are_missing(tmp_path: Path) -> None:
    """A peer's signed length can run ahead of the metadata blocks that came, and the peer can
    go before they do. Lookups and listings then show the longest run held (a version of the
    drive) instead of waiting for the rest, which hung every request of a mount; `wait_version`
    (a live mount's follower) fetches them once a peer is back."""
    from hyperfs.core.protocol.replicator import store_replicator
    from tests.test_replicator import connected, serving

    async with open_store(tmp_path / "w") as writer, open_store(tmp_path / "r") as reader:
        source = await Drive.create(writer)
        await source.write_file("/a", b"1")
        replicator = await store_replicator(reader)
        with trio.fail_after(30):
            async with serving(writer) as (port, _), connected(replicator, port):
                drive = await Drive.open(reader, source.key)
                held = drive.version
                assert await drive.read_file("/a") == b"1"
                for name in ("b", "c", "d"):
                    await source.write_file(f"/{name}", name.encode())
                while drive.metadata.length < source.metadata.length:
                    await drive.metadata.wait_append()  # the signed length alone, not its blocks
        with trio.fail_after(10):  # no peer now
            assert await drive.readdir("/") == ["a"] and drive.version == held
            assert await drive.read_file("/a") == b"1"
        with trio.fail_after(30):
            async with serving(writer) as (port, _), connected(replicator, port):
                assert await drive.wait_version(held) == source.version
                assert sorted(await drive.readdir("/")) == ["a", "b", "c", "d"]


@trio_test
async def test_a_read_in_a_file_right_after_opening_a_peer_drive_waits_for_the_content_length(
    tmp_path: Path,
) -> None:
    """Opening a peer's drive reads its metadata; its content core's length comes with the
    peer's sync a moment later. A seek before that was 'byte offset … is outside 0..0'."""
    from hyperfs.core.protocol.replicator import store_replicator
    from tests.test_replicator import connected, serving

    async with open_store(tmp_path / "w") as writer, open_store(tmp_path / "r") as reader:
        source = await Drive.create(writer)
        data = random.Random(3).randbytes(1_000_000)
        await source.write_file("/big", data)
        with trio.fail_after(30):
            async with serving(writer) as (port, _), connected(await store_replicator(reader), port):
                drive = await Drive.open(reader, source.key)
                file = await drive.open_reader("/big")
                assert await file.read(500_000, 100) == data[500_000:500_100]


@trio_test
async def test_a_peer_reads_another_writers_blocks_fetching_only_those_read(tmp_path: Path) -> None:
    """A file whose blocks are not BLOCK_SIZE, as another writer's may be, gets no guess of
    the block a byte is in: in a sparse core a wrong guess fetched a block nobody read. Reads
    in its middle fetch the blocks they read, and the tree nodes with seek requests."""
    from hyperfs.core.protocol.replicator import store_replicator
    from tests.test_replicator import connected, serving

    async with open_store(tmp_path / "w") as writer, open_store(tmp_path / "r") as reader:
        source = await Drive.create(writer)
        await source.write_file("/first", b"f" * 100_000)
        sizes = [40_000 + 1_000 * (i % 7) for i in range(60)]
        data = random.Random(5).randbytes(sum(sizes))
        starts = [sum(sizes[:i]) for i in range(61)]
        offset, byte_offset = source.content.length, source.content.byte_length
        await source.content.append([data[starts[i] : starts[i + 1]] for i in range(60)])
        st = Stat(stat_mod.S_IFREG | 0o644, size=len(data), blocks=60, offset=offset, byte_offset=byte_offset)
        await source.metadata.append(source.tree.put(("odd.bin",), st.encode()))
        with trio.fail_after(30):
            async with serving(writer) as (port, _), connected(await store_replicator(reader), port):
                drive = await Drive.open(reader, source.key)
                file = await drive.open_reader("/odd.bin")
                read = (1_000_000, 2_000_000, 123_456, starts[33])
                for at in read:
                    assert await file.read(at, 100) == data[at : at + 100], at
                in_file = [i for i in range(60) if drive.content.has_local(offset + i)]
                assert in_file == sorted(next(i for i in range(60) if starts[i + 1] > at) for at in read)


@trio_test
async def test_reads_anywhere_in_stored_files_of_equal_blocks_or_not_find_their_bytes(tmp_path: Path) -> None:
    """A drive's own file has equal blocks: a read anywhere finds its block by arithmetic once
    a scan of the file's tree leaves said so. Another writer's file with as many blocks, of
    other sizes, is found by the tree. Both again in the drive opened anew."""
    sizes = [BLOCK_SIZE - 100, BLOCK_SIZE + 100, BLOCK_SIZE, BLOCK_SIZE - 7, BLOCK_SIZE + 7, 123]
    files = {"/equal": random.Random(1).randbytes(5 * BLOCK_SIZE + 123), "/other": random.Random(2).randbytes(sum(sizes))}
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.write_file("/equal", files["/equal"])
        offset, byte_offset = drive.content.length, drive.content.byte_length
        cuts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        await drive.content.append([files["/other"][a:b] for a, b in zip(cuts, cuts[1:])])
        st = Stat(stat_mod.S_IFREG | 0o644, size=len(files["/other"]), blocks=len(sizes), offset=offset, byte_offset=byte_offset)
        await drive.metadata.append(drive.tree.put(("other",), st.encode()))
        key = drive.key
    for _ in range(2):  # the second time from the store as left on disk
        async with open_store(tmp_path) as store:
            drive = await Drive.open(store, key)
            for name, data in files.items():
                file = await drive.open_reader(name)
                for at in random.Random(3).sample(range(len(data)), 60):
                    assert await file.read(at, 5000, alone=True) == data[at : at + 5000], (name, at)
            assert sorted(drive._equal_blocks.values()) == [False, True]


@trio_test
async def test_a_sequential_reader_of_a_peer_file_fetches_blocks_ahead_a_random_one_does_not(
    tmp_path: Path,
) -> None:
    """Reads that go on from the last one, or land in the blocks asked for ahead of it (the
    kernel asks for a file's next pieces before the last is in), ask peers for a window of
    blocks ahead that doubles up to READ_AHEAD; a read elsewhere fetches only its own blocks."""
    from hyperfs.core.protocol.replicator import store_replicator
    from hyperfs.drive.read_ahead import READ_AHEAD, READ_AHEAD_FIRST
    from tests.test_replicator import connected, serving

    async with open_store(tmp_path / "w") as writer, open_store(tmp_path / "r") as reader:
        source = await Drive.create(writer)
        data = random.Random(9).randbytes(BLOCK_SIZE * 400)
        await source.write_file("/big", data)
        replicator = await store_replicator(reader)
        with trio.fail_after(30):
            async with serving(writer) as (port, _), connected(replicator, port):
                drive = await Drive.open(reader, source.key)
                file = await drive.open_reader("/big")
                state = replicator.add(drive.content)
                start = (await drive.stat("/big")).offset

                async def read(offset: int, size: int) -> set[int]:
                    """Read, wait for what it asked for, and say which blocks are here."""
                    assert await file.read(offset, size) == data[offset : offset + size]
                    while state.wanted or state.inflight:
                        await trio.sleep(0.01)
                    return {i - start for i in range(start, start + 400) if drive.content.has_local(i)}

                first = READ_AHEAD_FIRST  # blocks asked for past a read's own
                assert await read(0, 100) == set(range(1 + first))
                # Went on (blocks 0 to 2): doubled.
                assert await read(100, 2 * BLOCK_SIZE) == set(range(3 + 2 * first))
                # Not where the last read ended, but in the blocks asked for: doubled again.
                ahead = set(range(11 + 4 * first))
                assert await read(10 * BLOCK_SIZE, 100) == ahead
                assert await read(300 * BLOCK_SIZE, 100) == ahead | {300}  # elsewhere: its block alone
                assert await read(300 * BLOCK_SIZE + 100, 100) == ahead | set(range(300, 301 + first))
                # The kernel's 1 MiB reads, two at once: a read larger than the window, and the
                # next one landing past the last read's end, in the blocks asked for with it.
                ahead |= set(range(300, 317 + 2 * first))
                assert await read(300 * BLOCK_SIZE + 200, 16 * BLOCK_SIZE) == ahead
                assert await read(317 * BLOCK_SIZE + 5, 100) == ahead | set(range(317, 318 + 4 * first))
                assert READ_AHEAD > 4 * first


@trio_test
async def test_two_readers_of_two_peer_files_keep_a_run_each(tmp_path: Path) -> None:
    """Two `cat`s of two files far apart in the content core, 1 MiB reads taking turns: each
    file's run goes on and its window doubles. With one run shared, each read started it over
    and asked for READ_AHEAD_FIRST blocks past itself, never more."""
    from hyperfs.core.protocol.replicator import store_replicator
    from hyperfs.drive.read_ahead import NEAR, READ_AHEAD, READ_AHEAD_FIRST
    from tests.test_replicator import connected, serving

    async with open_store(tmp_path / "w") as writer, open_store(tmp_path / "r") as reader:
        source = await Drive.create(writer)
        data = {name: random.Random(name).randbytes(BLOCK_SIZE * 100) for name in ("/a", "/b")}
        await source.write_file("/a", data["/a"])
        await source.write_file("/gap", bytes(BLOCK_SIZE * (NEAR * READ_AHEAD + 100)))  # past any run's reach
        await source.write_file("/b", data["/b"])
        replicator = await store_replicator(reader)
        with trio.fail_after(30):
            async with serving(writer) as (port, _), connected(replicator, port):
                drive = await Drive.open(reader, source.key)
                state = replicator.add(drive.content)
                files = {name: await drive.open_reader(name) for name in data}
                starts = {name: (await drive.stat(name)).offset for name in data}
                for at in range(0, 4 * 16 * BLOCK_SIZE, 16 * BLOCK_SIZE):
                    for name, file in files.items():
                        assert await file.read(at, 16 * BLOCK_SIZE) == data[name][at : at + 16 * BLOCK_SIZE]
                while state.wanted or state.inflight:
                    await trio.sleep(0.01)
                for name, start in starts.items():
                    ahead = sum(drive.content.has_local(start + i) for i in range(64, 100))
                    assert ahead >= 4 * READ_AHEAD_FIRST, name


@asynccontextmanager
async def peer_files(tmp_path: Path, count: int) -> AsyncIterator[Callable[[int], Awaitable[set[int]]]]:
    """A peer's drive of `count` one-block files, f0000 on, written in order (so in order in its
    content core), mounted here as a Drive that reads it through a replicator. Yields
    `read(i)`: read file i, wait for what that asked peers for, and say which files are here."""
    from hyperfs.core.protocol.replicator import store_replicator
    from tests.test_replicator import connected, serving

    async with open_store(tmp_path / "w") as writer, open_store(tmp_path / "r") as reader:
        source = await Drive.create(writer)
        files = [random.Random(i).randbytes(1000 + i % 1000) for i in range(count)]
        for i, data in enumerate(files):
            await source.write_file(f"/f{i:04}", data)
        replicator = await store_replicator(reader)
        with trio.fail_after(60):
            async with serving(writer) as (port, _), connected(replicator, port):
                drive = await Drive.open(reader, source.key)
                state = replicator.add(drive.content)
                first = (await drive.stat("/f0000")).offset
                assert (await drive.stat(f"/f{count - 1:04}")).offset == first + count - 1

                async def read(i: int) -> set[int]:
                    assert await drive.read_file(f"/f{i:04}") == files[i]
                    while state.wanted or state.inflight:
                        await trio.sleep(0.005)
                    return {j for j in range(count) if drive.content.has_local(first + j)}

                yield read


@trio_test
async def test_a_reader_of_a_peers_files_in_the_order_written_fetches_the_next_ones_ahead(tmp_path: Path) -> None:
    """`tar c` or `cp -r` of a peer's tree reads its files in about the order the drive wrote
    them, one after the other in the content core: once a read of the next file lands in the
    blocks read ahead, the run goes on past the file's end, so each file costs no round trip
    of its own. A reader of one file fetches nothing past it."""
    from hyperfs.drive.read_ahead import READ_AHEAD_FIRST

    async with peer_files(tmp_path, 100) as read:
        assert await read(50) == {50}  # one file: nothing past it
        assert await read(0) == {0, 50}
        assert await read(1) == {*range(2 + 2 * READ_AHEAD_FIRST), 50}  # the next: past it
        assert await read(2) == {*range(3 + 4 * READ_AHEAD_FIRST), 50}  # stored: on


@trio_test
async def test_a_reader_of_a_peers_files_in_another_order_fetches_around_its_reads(tmp_path: Path) -> None:
    """rsync reads a folder's files sorted by name; a drive written by `cp -a` from a local
    folder holds them in readdir's hash order. A read of a file from its start that lands a
    little before the run (or past it) goes on in it, and the run then asks for a window
    behind its reads as well as ahead, so reading the files backwards costs no round trip a
    file either."""
    from hyperfs.drive.read_ahead import READ_AHEAD_FIRST

    async with peer_files(tmp_path, 100) as read:
        assert await read(99) == {99}  # one file: nothing past it
        assert await read(97) == set(range(97 - 2 * READ_AHEAD_FIRST, 100))  # behind: the window behind
        here = await read(96)
        assert await read(98) == here  # in the run: nothing new
        for i in range(95, -1, -1):
            await read(i)


@trio_test
async def test_a_reader_of_a_wide_folder_in_another_order_soon_finds_its_files_asked_for(tmp_path: Path) -> None:
    """A folder of 1,000 one-block files, far wider than one run's reach, read in a shuffled
    order: the reads that land near no run start one each, the runs grow until they meet, and
    after the first few dozen reads, files are there or on their way when read. With one run,
    which each such read moved, about a quarter of them (236) waited for a round trip."""
    count = 1000
    order = list(range(count))
    random.Random(3).shuffle(order)
    async with peer_files(tmp_path, count) as read:
        here: set[int] = set()
        waited = 0
        for i in order:
            waited += i not in here
            here = await read(i)
    assert waited <= count // 20


@trio_test
async def test_a_run_through_small_files_asks_for_blocks_in_batches(tmp_path: Path) -> None:
    """Reading one-block files in the order written moves the run's window a block a file;
    it is topped up once its lead is down to half, so peers are asked for half a window at a
    time, not a block per file."""
    from hyperfs.drive.read_ahead import READ_AHEAD

    count = 3 * READ_AHEAD
    async with peer_files(tmp_path, count) as read:
        frontiers = [max(await read(i)) for i in range(count)]
    moves = sum(1 for a, b in zip(frontiers, frontiers[1:]) if b != a)
    assert moves <= 2 * count // READ_AHEAD + 8  # the doubling, then a move per half window


@trio_test
async def test_open_writers_never_block_others_and_stay_contiguous(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        one = bytes(range(256)) * 1500  # 6 blocks minus a bit
        two = b"\xaa" * (BLOCK_SIZE * 3 + 5)
        first = await drive.open_write("/one")
        second = await drive.open_write("/two")
        await first.write(one[:200_000])
        with trio.fail_after(10):  # an open writer holds no lock between calls
            await drive.mkdir("/d")
            await drive.write_file("/d/small", b"s" * 70_000)
            await second.write(two[:100_000])
        await first.write(one[200_000:])  # lands after the others': its run moves
        await second.write(two[100_000:])
        st_one = await first.close()
        st_two = await second.close()
        assert await drive.read_file("/one") == one
        assert await drive.read_file("/two") == two
        assert await drive.read_file("/d/small") == b"s" * 70_000
        for st in (st_one, st_two):
            assert st.blocks == -(-st.size // BLOCK_SIZE)
        aborted = await drive.open_write("/gone")
        await aborted.write(b"z" * BLOCK_SIZE * 2)
        aborted.abort()
        await drive.write_file("/after", b"a")
        assert not await drive.exists("/gone") and await drive.read_file("/after") == b"a"


@trio_test
async def test_lookups_while_a_write_is_appended_see_it(tmp_path: Path) -> None:
    """A lookup during our own append (its content is stored on a worker thread) sees the tree
    with the new entry, not one rebuilt from the shorter log (which lost the entry and every
    cached listing: two `tar x` at once into a mount got ENOENT for folders just made)."""
    async with open_store(tmp_path) as store:
        drive = await Drive.create(store)
        await drive.mkdir("/d")
        data = b"b" * (THREAD_BYTES + BLOCK_SIZE)  # big enough for the content append to leave the loop
        seen: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drive.write_file, "/d/big", data)
            with trio.fail_after(10):
                while drive.metadata.length == drive.version:  # until the new node is in flight
                    await trio.sleep(0)
            while drive.metadata.length < drive.version:
                seen.append((await drive.lstat("/d/big")).size)
                await trio.sleep(0)
        assert seen and set(seen) == {len(data)}
        assert await drive.readdir("/d") == ["big"] and await drive.read_file("/d/big") == data
