"""Processes racing on one file of a real mount: the drive ends as the kernel showed it."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mounting import mounted

WRITTEN = 100_000
# What the starved process writes after its O_TRUNC: a new start, or nothing (a plain cut).
REWRITES = (b"b" * 1000, b"")


def _waits_for_fuse(pid: int) -> bool:
    """Is process `pid` asleep waiting for an answer from a FUSE file system?"""
    with open(f"/proc/{pid}/wchan") as f:
        return f.read() == "request_wait_answer"


def _crowd(cpu: int, stop, busy) -> None:
    """Keep `cpu` busy while `busy` is set (and nearly idle otherwise)."""
    os.sched_setaffinity(0, {cpu})
    while not stop.is_set():
        if not busy.value:
            time.sleep(0.0001)


def _rewrite(cpu: int, paths: list[str], go, opened, done) -> None:
    """Open each of `paths` with O_TRUNC and write it anew, when told, at the lowest priority
    on `cpu`: once the mount has answered the open, it waits there while `cpu` is crowded."""
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    for i, path in enumerate(paths):
        go.wait()
        go.clear()
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        opened.set()
        os.write(fd, REWRITES[i % 2])
        os.close(fd)
        done.set()


def test_bytes_the_kernel_dropped_with_an_o_trunc_stay_out_of_the_drive(tmp_path: Path) -> None:
    """With the writeback cache the kernel applies an O_TRUNC to its own cache only after the
    mount answered the open, and lets other writers on meanwhile: what one writes and closes
    just then reaches the mount after the cut, though the kernel drops it. The file must end
    as the kernel shows it, also after a remount. One process writes while another, starved of
    CPU, is still inside that open and then writes anew, or nothing (so only its own close can
    find the kernel's size); a few iterations in a hundred hit the window."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs: one to starve the truncating process on")
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    ctx = multiprocessing.get_context("fork")
    shown: dict[str, bytes] = {}
    with mounted(store, mnt):
        paths = [str(mnt / f"f{i}") for i in range(400)]
        stop, go, opened, done = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
        busy = ctx.Value("b", 0, lock=False)
        crowd = ctx.Process(target=_crowd, args=(0, stop, busy))
        rewrite = ctx.Process(target=_rewrite, args=(0, paths, go, opened, done))
        crowd.start()
        rewrite.start()
        try:
            for path in paths:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                done.clear()
                opened.clear()
                go.set()
                deadline = time.monotonic() + 2
                while not opened.is_set() and time.monotonic() < deadline:
                    if _waits_for_fuse(rewrite.pid):
                        busy.value = 1
                        break
                os.write(fd, b"a" * WRITTEN)
                os.close(fd)
                busy.value = 0
                assert done.wait(30)
                shown[path] = Path(path).read_bytes()
        finally:
            stop.set()
            go.set()
            crowd.join(30)
            rewrite.kill()
            rewrite.join(30)
    # The window drops the first write: only the rewrite is left.
    assert set(REWRITES) <= set(shown.values()), "an iteration of each kind must hit the window"
    with mounted(store, mnt):
        assert [path for path, data in shown.items() if Path(path).read_bytes() != data] == []


def test_a_truncate_by_name_cuts_the_file_a_rename_moved_meanwhile(tmp_path: Path) -> None:
    """truncate(2) names a file, the kernel picks its inode, and the mount rewrites what it
    keeps (a while, for a big file): a rename of its folder meanwhile, and another file put in
    its place, must not take the cut. The file is cut wherever it went; the other is kept."""
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    cut_file = bytes(range(256)) * (48 << 12)  # 48 MiB
    other = b"the file that takes its place"
    with mounted(store, mnt):
        (mnt / "a").mkdir()
        (mnt / "b").mkdir()
        (mnt / "a" / "f").write_bytes(cut_file)
        (mnt / "b" / "f").write_bytes(other)
        os.stat(mnt / "a" / "f")  # looked up: the truncate's one request is the setattr
        # truncate(2) by name, not truncate(1), which opens the file and cuts it through the handle.
        cut = f"import os; os.truncate({str(mnt / 'a' / 'f')!r}, {len(cut_file) // 2})"
        truncate = subprocess.Popen([sys.executable, "-c", cut])
        try:
            deadline = time.monotonic() + 10
            while not _waits_for_fuse(truncate.pid) and time.monotonic() < deadline:
                time.sleep(0.0005)
            time.sleep(0.05)
            assert truncate.poll() is None, "the truncate ended before the renames could race it"
            os.rename(mnt / "a", mnt / "c")
            os.rename(mnt / "b", mnt / "a")
        finally:
            assert truncate.wait(60) == 0
        shown = {name: (mnt / name / "f").read_bytes() for name in ("a", "c")}
    assert shown == {"a": other, "c": cut_file[: len(cut_file) // 2]}
    with mounted(store, mnt):
        assert {name: (mnt / name / "f").read_bytes() for name in ("a", "c")} == shown
