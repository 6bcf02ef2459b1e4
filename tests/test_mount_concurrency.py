"""Several processes changing one mount at once: what the folder shows before it is unmounted is
what the drive holds afterwards, and no operation fails in a way a local file system would not."""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import random
import time
from pathlib import Path

from tests.mounting import mounted

# What racing processes get from a local file system too (a name another one just removed,
# renamed, made or filled).
RACES = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR, errno.EINVAL}
NAMES = [f"n{i}" for i in range(8)]


def _work(root: Path, seed: int, seconds: float, out: multiprocessing.Queue) -> None:
    """Random changes under `root` for `seconds`: files streamed in (past the mount's streaming
    start), appended to and cut while other processes rename the folders they are in."""
    rng = random.Random(seed)
    failures = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        path = root.joinpath(*rng.choices(NAMES, k=rng.randint(1, 3)))
        op = rng.choice(["mkdir", "stream", "append", "truncate", "rename", "rename", "unlink", "rmdir", "read"])
        try:
            if op == "mkdir":
                path.mkdir()
            elif op == "stream":
                path.write_bytes(rng.randbytes(rng.randint(1, 3) << 20))
            elif op == "append":
                with open(path, "ab") as f:
                    f.write(rng.randbytes(rng.randint(1, 5000)))
            elif op == "truncate":
                os.truncate(path, rng.randint(0, 1 << 20))
            elif op == "rename":
                os.rename(path, root.joinpath(*rng.choices(NAMES, k=rng.randint(1, 3))))
            elif op == "unlink":
                path.unlink()
            elif op == "rmdir":
                path.rmdir()
            else:
                path.read_bytes()
        except OSError as err:
            if err.errno not in RACES:
                failures.append(f"{op} {path.relative_to(root)}: {err}")
    out.put(failures)


def _tree(root: Path) -> dict[str, str]:
    """Every entry under `root`: a folder, or a file's size and content hash."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = "folder"
        for name in files:
            data = Path(folder, name).read_bytes()
            found[os.path.relpath(os.path.join(folder, name), root)] = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    return found


def test_concurrent_streams_appends_cuts_and_renames_keep_the_tree(tmp_path):
    """A file's Node goes where its name is when it is put: a folder renamed while a file in it
    is being written takes the file along, and a cut waits for a commit reading the content."""
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt) as m:
        out: multiprocessing.Queue = multiprocessing.Queue()
        workers = [multiprocessing.Process(target=_work, args=(m.path, seed, 12.0, out)) for seed in range(4)]
        for worker in workers:
            worker.start()
        failures = [line for _ in workers for line in out.get(timeout=120)]
        for worker in workers:
            worker.join()
        assert failures == []
        before = _tree(m.path)
    with mounted(store, mnt) as m:
        assert _tree(m.path) == before
    assert len(before) > 20  # the workers made a tree, not only errors
