#!/usr/bin/env python3
"""Several processes changing one mount at once, then the tree compared after a remount.

Each worker picks random paths (up to three levels deep among a few names) and random
operations for a while. Printed: the failures a local file system would not give (ENOENT,
EEXIST, ENOTEMPTY, EISDIR, ENOTDIR and EINVAL are races any file system has), and every entry
whose type, size, content, mode, xattrs or link target differs between the mount before
unmounting and the drive mounted again. Symlinks all point at `target`, so writes through
them meet other writers of the file that name leads to.

This found the races fixed at 70f8770 (a cut under a commit; a file closed in a folder being
renamed), the one `DriveOperations._settle_size` handles (bytes another process wrote while
the kernel was still inside an O_TRUNC open, which the kernel dropped but sent on; it showed in
about one run of 5-20, now tested in tests/test_mount_races.py), and at ab98fcc an xattr set
while another process closed the file, which put the file's old content back (one run in
~45 of 25 s; tested in tests/test_drive.py). At 8567e63 it found a truncate by name racing a
folder exchange: the cut went to the file that took the name, not the one truncated (one run
in 11; fixed in b4a6d47 and tested in tests/test_mount_races.py).

With --follower the store is also mounted a second time while the first mount holds it (a
read-only mount following that process) and its tree is compared too; that found a follower
stopping on a head read before its tree nodes (fixed at 6008bbb, one run in 3).

Usage: .venv/bin/python scripts/stress_mount.py [--seconds 12] [--workers 4] [--ops mkdir,...] [--follower]
Needs /dev/fuse and fusermount3 (as the tests do).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import hashlib
import multiprocessing
import os
import random
import stat
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.mounting import mounted  # noqa: E402 - after the path above

RACES = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR, errno.EINVAL}
NAMES = [f"n{i}" for i in range(8)]
OPS = [
    "mkdir", "stream", "append", "edit", "truncate", "ftruncate", "rename", "unlink", "rmdir", "read", "chmod", "xattr",
    "symlink", "exchange",
]
RENAME_EXCHANGE = 2
FOLLOW_WAIT = 3.0  # seconds for a follower mount to take in the last changes (it looks every 0.5)


def exchange(a: Path, b: Path) -> None:
    """renameat2(a, b, RENAME_EXCHANGE): swap two entries in one step."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def work(root: Path, seed: int, seconds: float, ops: list[str], out: multiprocessing.Queue) -> None:
    """Random `ops` under `root` for `seconds`; puts the unexpected failures on `out`."""
    rng = random.Random(seed)
    failures = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        path = root.joinpath(*rng.choices(NAMES, k=rng.randint(1, 3)))
        op = rng.choice(ops)
        try:
            if op == "mkdir":
                path.mkdir()
            elif op == "stream":  # past the mount's streaming start, rewriting from the start
                path.write_bytes(rng.randbytes(rng.randint(1, 3) << 20))
            elif op == "append":
                with open(path, "ab") as f:
                    f.write(rng.randbytes(rng.randint(1, 5000)))
            elif op == "edit":  # bytes somewhere in an existing file: the whole file is written anew
                with open(path, "r+b") as f:
                    f.seek(rng.randint(0, 1 << 20))
                    f.write(rng.randbytes(rng.randint(1, 70000)))
            elif op == "truncate":  # by name: no handle open
                os.truncate(path, rng.randint(0, 1 << 20))
            elif op == "ftruncate":
                with open(path, "r+b") as f:
                    f.truncate(rng.randint(0, 1 << 20))
            elif op == "rename":
                os.rename(path, root.joinpath(*rng.choices(NAMES, k=rng.randint(1, 3))))
            elif op == "unlink":
                path.unlink()
            elif op == "rmdir":
                path.rmdir()
            elif op == "chmod":
                os.chmod(path, rng.choice([0o700, 0o711, 0o750, 0o755]))
            elif op == "xattr":
                os.setxattr(path, "user.k", rng.randbytes(8))
            elif op == "symlink":
                os.symlink("target", path)
            elif op == "exchange":
                exchange(path, root.joinpath(*rng.choices(NAMES, k=rng.randint(1, 3))))
            else:
                path.read_bytes()
        except OSError as err:
            if err.errno not in RACES:
                failures.append(f"{op} {path.relative_to(root)}: {err}")
    out.put(failures)


def tree(root: Path) -> dict[str, str]:
    """Every entry under `root`: a symlink's target, or a folder's or file's mode and xattrs,
    and a file's size and content hash."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                entry = f"link to {os.readlink(path)}"
            else:
                xattrs = sorted((key, os.getxattr(path, key).hex()) for key in os.listxattr(path))
                entry = f"mode {stat.S_IMODE(st.st_mode):o} xattrs {xattrs}"
                if stat.S_ISDIR(st.st_mode):
                    entry = f"folder, {entry}"
                else:
                    data = path.read_bytes()
                    entry = f"{len(data)} bytes {hashlib.sha256(data).hexdigest()[:12]}, {entry}"
            found[os.path.relpath(path, root)] = entry
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, from {','.join(OPS)}")
    parser.add_argument(
        "--follower", action="store_true", help="also mount the store a second time (read-only, following) and compare it too"
    )
    args = parser.parse_args()
    ops = args.ops.split(",")
    with tempfile.TemporaryDirectory() as work_dir, contextlib.ExitStack() as mounts:
        store, mnt = Path(work_dir, "store"), Path(work_dir, "mnt")
        m = mounts.enter_context(mounted(store, mnt))
        follower = mounts.enter_context(mounted(store, Path(work_dir, "follower"))) if args.follower else None
        out: multiprocessing.Queue = multiprocessing.Queue()
        workers = [
            multiprocessing.Process(target=work, args=(m.path, seed, args.seconds, ops, out))
            for seed in range(args.workers)
        ]
        for worker in workers:
            worker.start()
        failures = [line for _ in workers for line in out.get(timeout=args.seconds + 120)]
        for worker in workers:
            worker.join()
        before = tree(m.path)
        followed = before
        if follower is not None:
            os.sync()  # the writer's last files into its store
            time.sleep(FOLLOW_WAIT)
            followed = tree(follower.path)
        mounts.close()
        with mounted(store, mnt) as m:
            after = tree(m.path)
    differ = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    lagging = sorted(name for name in before.keys() | followed.keys() if before.get(name) != followed.get(name))
    for line in failures:
        print("failed:", line)
    for name in differ:
        print(f"differs: {name}: mounted {before.get(name, '-')}, remounted {after.get(name, '-')}")
    for name in lagging:
        print(f"differs: {name}: mounted {before.get(name, '-')}, in the follower {followed.get(name, '-')}")
    follower_text = f", {len(lagging)} differ in the follower" if args.follower else ""
    print(f"{len(before)} entries, {len(failures)} unexpected failures, {len(differ)} differ after remount{follower_text}")
    return 1 if failures or differ or lagging else 0


if __name__ == "__main__":
    sys.exit(main())
