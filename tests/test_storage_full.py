"""A full disk: RocksDB refuses writes with StorageFullError (ENOSPC), and once space is freed
the store takes writes again without being reopened by its user, as long as that loses nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hyperfs.core.storage.rocks import Rocks
from hyperfs.errors import StorageFullError
from tests.small_disk import small_disk

VALUE = 64 * 1024


def fill(rocks: Rocks, *, logged: bool) -> int:
    """Commit 64 KiB values until the disk is full; how many went in."""
    i = 0
    with pytest.raises(StorageFullError, match="No space left on device"):
        while True:
            rocks.commit([(b"k%06d" % i, os.urandom(VALUE), None)], logged=logged)
            i += 1
            if logged and i % 16 == 0:
                rocks.flush(sync=False)
    return i


def filler(disk: Path, mib: int) -> Path:
    path = disk / "filler"
    path.write_bytes(bytes(mib << 20))
    return path


@pytest.mark.parametrize("logged", [True, False])
def test_writes_resume_once_space_is_freed(tmp_path, logged):
    """Unlogged commits too: on a nearly full disk they go to the log (see RESERVE)."""
    with small_disk(tmp_path / "disk", 64) as disk:
        space = filler(disk, 40)
        rocks = Rocks(str(disk / "db"))
        written = fill(rocks, logged=logged)
        assert not rocks.unlogged
        with pytest.raises(StorageFullError):
            rocks.commit([(b"still", b"full", None)])
        space.unlink()
        rocks.commit([(b"after", b"room", None)], logged=logged)
        assert rocks.live.get(b"after") == b"room" and rocks.live.get(b"still") is None
        rocks.close()
        again = Rocks(str(disk / "db"))
        assert again.live.get(b"after") == b"room"
        assert all(again.live.get(b"k%06d" % i) is not None for i in range(written))
        again.close()


def test_unlogged_writes_stuck_by_a_full_disk_stay_refused_and_close_still_lets_go(tmp_path):
    """Unlogged commits live only in the memtables RocksDB could not write out (here, with no
    reserve, they were still made on a nearly full disk): reopening would lose them under
    whoever counted them, so writes keep failing; close() says they are lost, and still closes
    (the next open of the store works)."""
    with small_disk(tmp_path / "disk", 48) as disk:
        rocks = Rocks(str(disk / "db"), reserve=0)
        rocks.commit([(b"logged", b"kept", None)])
        space = filler(disk, 30)
        fill(rocks, logged=False)
        space.unlink()
        with pytest.raises(StorageFullError):
            rocks.commit([(b"after", b"room", None)])
        with pytest.raises(StorageFullError):
            rocks.close()
        assert rocks.closed
        again = Rocks(str(disk / "db"))
        assert again.live.get(b"logged") == b"kept"
        again.commit([(b"after", b"room", None)])
        assert again.live.get(b"after") == b"room"
        again.close()
