"""The README's main job, end to end, as a user runs it: only HYPERFS_STORE set, the installed
`hyperfs` command, a real FUSE mount, `cp -a` and `diff -r`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hyperfs.cli.mount_cmds import pid_file, wait_for_exit
from tests.mounting import is_mounted, require_fuse, run
from tests.test_cli_drive import odd_tree

HYPERFS = str(Path(sys.executable).parent / "hyperfs")  # the console script a user types

User = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def user(tmp_path: Path) -> Iterator[User]:
    """`user(*args)` runs `hyperfs ARGS` with HYPERFS_STORE=tmp_path/store and no --store; every
    folder it mounts is unmounted afterwards, even when the test failed."""
    require_fuse()
    env = {**os.environ, "HYPERFS_STORE": str(tmp_path / "store")}
    mountpoints: list[Path] = []

    def hyperfs(*args: object, check: bool = True, text: bool = True) -> subprocess.CompletedProcess:
        if args[0] == "mount":
            mountpoints.append(Path(str(args[1])))
        done = subprocess.run([HYPERFS, *map(str, args)], env=env, capture_output=True, text=text, timeout=300)
        assert done.returncode == 0 or not check, f"hyperfs {args}: {done.stderr!r}"
        return done

    yield hyperfs
    for mountpoint in mountpoints:
        if is_mounted(mountpoint) and hyperfs("unmount", mountpoint, check=False).returncode != 0:
            pid = pid_file(mountpoint).read_text() if pid_file(mountpoint).exists() else None
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
            if pid:
                wait_for_exit(int(pid), 60)


def same_files(a: Path, b: Path) -> None:
    """`diff -r` finds nothing, and files kept their modes and mtimes (ms)."""
    diff = subprocess.run(["diff", "-r", "--no-dereference", str(a), str(b)], capture_output=True, text=True)
    assert diff.returncode == 0 and diff.stdout == "", diff.stdout + diff.stderr
    for path in a.rglob("*"):
        if path.is_file() and not path.is_symlink():
            x, y = path.stat(), (b / path.relative_to(a)).stat()
            assert (x.st_mode, x.st_mtime_ns // 1_000_000) == (y.st_mode, y.st_mtime_ns // 1_000_000), path


def test_mount_copy_in_unmount_read_back_remount(tmp_path: Path, user: User) -> None:
    docs, drive_dir = tmp_path / "Documents", tmp_path / "Drive"
    odd_tree(docs)
    drive_dir.mkdir()

    # `hyperfs mount ~/Drive`: the default drive is made, its key printed, the folder usable now.
    key = user("mount", drive_dir).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", key), key
    assert is_mounted(drive_dir) and os.listdir(drive_dir) == []
    run("cp", "-a", str(docs), f"{drive_dir}/")
    user("unmount", drive_dir)
    assert not is_mounted(drive_dir) and os.listdir(drive_dir) == []

    # The drive commands see what was copied.
    assert user("keys").stdout.split("\t")[::2] == ["default", key + "\n"]
    assert user("ls", "default", "/Documents").stdout.splitlines() == sorted(os.listdir(docs))
    assert "tool.sh" in user("ls", "-l", key, "/Documents").stdout
    cat = user("cat", "default", "/Documents/big.bin", text=False).stdout
    assert cat == (docs / "big.bin").read_bytes()
    assert user("cat", "default", "/Documents/link").stdout == "spaced\n"
    user("export", "default", tmp_path / "out", "--quiet")
    same_files(docs, tmp_path / "out" / "Documents")

    # Mounted again, the same drive shows the same tree.
    assert user("mount", drive_dir).stdout.strip() == key
    same_files(docs, drive_dir / "Documents")
    user("unmount", drive_dir)
    assert not is_mounted(drive_dir)
