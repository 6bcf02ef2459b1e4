"""Real mounts for tests: `hyperfs mount` on a folder in tmp_path, always unmounted afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from hyperfs.cli import mount_cmds
from hyperfs.cli.mount_cmds import pid_file, wait_for_exit

PYTHON = sys.executable


def require_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse")
    if not any(os.access(os.path.join(d, "fusermount3"), os.X_OK) for d in os.environ["PATH"].split(":")):
        pytest.skip("needs fusermount3")


def hyperfs(store: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the `hyperfs` command on `store`."""
    return subprocess.run(
        [PYTHON, "-m", "hyperfs", "--store", str(store), *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=300,
    )


def is_mounted(mountpoint: Path) -> bool:
    return mount_cmds.is_mounted(os.path.realpath(mountpoint))


@dataclass
class Mount:
    store: Path
    path: Path
    key: str
    said: str = ""  # what `hyperfs mount` wrote to stderr besides the key

    def unmount(self) -> None:
        hyperfs(self.store, "unmount", str(self.path))
        assert not is_mounted(self.path)


@contextmanager
def mounted(store: Path, mountpoint: Path, *args: str) -> Iterator[Mount]:
    """`hyperfs mount` (detached), yield, then unmount even if the test failed; a mount that
    will not go is detached lazily so no test leaves one behind."""
    require_fuse()
    mountpoint.mkdir(exist_ok=True)
    done = hyperfs(store, "mount", str(mountpoint), *args, check=False)
    assert done.returncode == 0, done.stderr
    try:
        assert is_mounted(mountpoint)
        yield Mount(store, mountpoint, done.stdout.strip(), done.stderr)
    finally:
        if is_mounted(mountpoint):
            pid = _pid(mountpoint)
            if hyperfs(store, "unmount", str(mountpoint), check=False).returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
                if pid is not None:
                    wait_for_exit(pid, 60)


def _pid(mountpoint: Path) -> int | None:
    try:
        return int(pid_file(mountpoint).read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    """The store's default drive mounted read-write on tmp_path/mnt."""
    with mounted(tmp_path / "store", tmp_path / "mnt") as m:
        yield m


def run(*cmd: str, cwd: Path | None = None) -> str:
    """A shell tool that must succeed; its stdout."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{cmd}: {done.stderr}"
    return done.stdout


def errno_of(fn: Callable[[], object]) -> int:
    """The errno of the OSError `fn()` must raise."""
    with pytest.raises(OSError) as err:
        fn()
    return err.value.errno
