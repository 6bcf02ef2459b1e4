"""FolderWatch: a wait ends when a file in the folder is written, created or renamed into it,
and only once per batch of changes; a read-only store's watch wakes it for its writer's appends."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import trio.testing

from hyperfs.core import Corestore, Hypercore
from hyperfs.core.folder_watch import FolderWatch
from tests.drive_store import trio_test

LONG = 30  # seconds: a wait that has to end sooner, on a change


@trio_test
async def test_a_change_since_the_last_wait_ends_the_next_one_at_once(tmp_path: Path):
    with FolderWatch(str(tmp_path)) as watch:
        assert watch.watching
        assert not await watch.wait(0.05)  # nothing changed
        (tmp_path / "a").write_bytes(b"1")
        (tmp_path / "a").write_bytes(b"22")
        with trio.fail_after(LONG):
            assert await watch.wait(LONG)
        assert not await watch.wait(0.05)  # both writes were that one change
        (tmp_path / "b.tmp").write_bytes(b"x")
        assert await watch.wait(LONG)
        os.rename(tmp_path / "b.tmp", tmp_path / "b")  # how RocksDB replaces CURRENT
        assert await watch.wait(LONG)
        with open(tmp_path / "a", "r+b") as f:  # a log appended to in place
            f.seek(0, os.SEEK_END)
            f.write(b"more")
        assert await watch.wait(LONG)
        assert (tmp_path / "a").read_bytes() == b"22more"
        assert not await watch.wait(0.05)  # reading the folder's files is no change


@trio_test
async def test_a_waiting_task_wakes_on_a_write_from_elsewhere(tmp_path: Path):
    with FolderWatch(str(tmp_path)) as watch:
        woken: list[bool] = []

        async def waiter() -> None:
            woken.append(await watch.wait(LONG))

        with trio.fail_after(LONG):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                assert woken == []
                await trio.to_thread.run_sync((tmp_path / "log").write_bytes, b"entry")
        assert woken == [True]


@trio_test
async def test_a_folder_that_cannot_be_watched_leaves_the_caller_to_look_on_its_timeout(tmp_path: Path):
    with FolderWatch(str(tmp_path / "missing")) as watch:
        assert not watch.watching
        assert not await watch.wait(0.01)


@asynccontextmanager
async def written_and_read(tmp_path: Path) -> AsyncIterator[tuple[Hypercore, Corestore, Hypercore]]:
    """A core of one block ("a") in a store, the store opened read-only beside, and the core there."""
    path = str(tmp_path / "store")
    async with Corestore(path) as writer:
        core = await writer.get("log")
        await core.append(b"a")
        async with Corestore(path, read_only=True) as reader:
            yield core, reader, await reader.get(key=core.key)


@trio_test
async def test_a_read_only_store_is_woken_by_its_writers_append(tmp_path: Path):
    async with written_and_read(tmp_path) as (core, reader, seen):
        with reader.watch() as watch:
            await core.append([b"b", b"c"])
            with trio.fail_after(LONG):
                assert await watch.wait(LONG)
            await reader.catch_up()
            assert (seen.length, await seen.get(2)) == (3, b"c")


@trio_test
async def test_a_follower_takes_in_each_append_as_its_writer_makes_it(tmp_path: Path, monkeypatch):
    """`follow_writer` looks when the store's files change, not on a beat (here an hour's)."""
    from hyperfs.cli import common

    monkeypatch.setattr(common, "FOLLOW_SAFETY", 3600.0)
    monkeypatch.setattr(common, "FOLLOW_INTERVAL", 3600.0)
    async with written_and_read(tmp_path) as (core, reader, seen):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(common.follow_writer, reader)
            for n in range(2, 5):
                await core.append(b"%d" % n)
                with trio.fail_after(LONG):
                    while seen.length < n:
                        await seen.wait_append()
                assert await seen.get(n - 1) == b"%d" % n
            nursery.cancel_scope.cancel()
