#!/usr/bin/env python3
"""Our mount against pyfuse3's own passthroughfs.py, in one run on the same disk.

For each file system: copy a 512 MiB file in with `cp` (and the mount process's peak RSS
meanwhile), and again in 128 KiB writes (a program that ignores st_blksize), read it back cold
(page cache dropped), untar the CPython stdlib, `ls -lR` it. Prints each figure, the
passthrough's, and the ratio (ours / theirs, > 1 is better for speeds, < 1 for times).

The machine may be shared and noisy: `--runs N` runs both back to back N times (passthrough
first in odd runs, ours first in even ones) and prints each figure's median with its range
(min-max) over the runs; the ratio is of the medians.

Usage: .venv/bin/python scripts/bench_mount.py [--size-mib 512] [--runs 1] [--keep]
Needs root (to drop caches), /dev/fuse, fusermount3, and network once for `pip download`
(`--no-binary pyfuse3`: the sdist of pyfuse3 only; its build tools may come as wheels).
"""

from __future__ import annotations

import argparse
import os
import statistics
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
PYFUSE3 = "pyfuse3==3.5.0"
CHUNK = 1024 * 1024


def passthroughfs() -> Path:
    """examples/passthroughfs.py from the pyfuse3 source distribution (downloaded once)."""
    target = CACHE / "pyfuse3-src" / "passthroughfs.py"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-binary", "pyfuse3", "--no-deps",
         PYFUSE3, "-d", str(target.parent)],
        check=True,
        capture_output=True,
    )
    sdist = next(target.parent.glob("pyfuse3-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("examples/passthroughfs.py"))
        target.write_bytes(tar.extractfile(member).read())
    return target


def big_file(size_mib: int) -> Path:
    """A file of random bytes on the local disk (made once)."""
    path = CACHE / f"bench-{size_mib}MiB.bin"
    if not path.exists() or path.stat().st_size != size_mib * CHUNK:
        with open(path, "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(CHUNK))
    return path


def stdlib_tar() -> Path:
    """The running Python's standard library (without site-packages) as a tar (made once)."""
    path = CACHE / "bench-stdlib.tar"
    if not path.exists():
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        with tarfile.open(path, "w") as tar:
            tar.add(stdlib, arcname="Lib", filter=lambda m: None if "site-packages" in m.name else m)
    return path


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def wait_mounted(path: Path, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.ismount(path):
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"mount of {path} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not mount")
        time.sleep(0.05)


def wait_gone(pid: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)


@dataclass
class Figures:
    write_mib_s: float
    write_128k_mib_s: float
    peak_rss_mb: float
    read_mib_s: float
    untar_s: float
    ls_lr_s: float


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def copy_in(src: Path, dst: Path) -> None:
    """`cp`, which sizes its writes by the destination's st_blksize."""
    subprocess.run(["cp", str(src), str(dst)], check=True)


def copy_in_128k(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 128 * 1024)


def read_all(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(CHUNK):
            pass


def run_workload(mnt: Path, pid: int, big: Path, tar: Path) -> Figures:
    size_mib = big.stat().st_size / CHUNK
    drop_caches()
    write_s = timed(lambda: copy_in(big, mnt / "big.bin"))
    rss = peak_rss_mb(pid)
    drop_caches()
    write_128k_s = timed(lambda: copy_in_128k(big, mnt / "big-128k.bin"))
    drop_caches()
    read_s = timed(lambda: read_all(mnt / "big.bin"))
    (mnt / "untar").mkdir()
    untar_s = timed(lambda: subprocess.run(["tar", "-xf", str(tar), "-C", str(mnt / "untar")], check=True))
    drop_caches()
    ls_s = timed(lambda: subprocess.run(["ls", "-lR", str(mnt / "untar")], check=True, stdout=subprocess.DEVNULL))
    return Figures(size_mib / write_s, size_mib / write_128k_s, rss, size_mib / read_s, untar_s, ls_s)


def bench_passthrough(work: Path, big: Path, tar: Path) -> Figures:
    source, mnt = work / "pt-source", work / "pt-mnt"
    source.mkdir()
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, str(passthroughfs()), str(source), str(mnt)])
    try:
        wait_mounted(mnt, proc)
        return run_workload(mnt, proc.pid, big, tar)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        proc.wait(timeout=120)


def bench_ours(work: Path, big: Path, tar: Path) -> Figures:
    from hyperfs.cli.mount_cmds import pid_file

    store, mnt = work / "store", work / "hy-mnt"
    mnt.mkdir()
    hyperfs = [sys.executable, "-m", "hyperfs", "--store", str(store)]
    subprocess.run([*hyperfs, "mount", str(mnt)], check=True, stdout=subprocess.DEVNULL)
    pid = int(pid_file(mnt).read_text())
    try:
        return run_workload(mnt, pid, big, tar)
    finally:
        if subprocess.run([*hyperfs, "unmount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        wait_gone(pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=1, help="back-to-back runs of both (median and range shown)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    big, tar = big_file(args.size_mib), stdlib_tar()
    with tarfile.open(tar) as t:
        files = sum(1 for m in t.getmembers() if m.isfile())
    work = CACHE / "bench-mount"
    ours: list[Figures] = []
    theirs: list[Figures] = []
    for run in range(args.runs):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            # Which goes first alternates: what the first leaves behind (writeback, a busy
            # disk) must not always fall on the same side.
            sides = [(theirs, bench_passthrough), (ours, bench_ours)]
            for figures, bench in sides if run % 2 == 0 else sides[::-1]:
                figures.append(bench(work, big, tar))
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    rows = [
        (f"cp {args.size_mib} MiB in (MiB/s)", "write_mib_s", True),
        ("copy in 128 KiB writes (MiB/s)", "write_128k_mib_s", True),
        (f"read {args.size_mib} MiB cold (MiB/s)", "read_mib_s", True),
        (f"untar stdlib, {files} files (s)", "untar_s", False),
        ("ls -lR of it (s)", "ls_lr_s", False),
        ("mount peak RSS while copying (MB)", "peak_rss_mb", None),
    ]
    print(f"{'workload':36} {'hyperfs':>20} {'passthrough':>20} {'ratio':>6}   ({args.runs} runs: median [min-max])")
    for name, attr, faster_is_more in rows:
        a, b = [getattr(f, attr) for f in ours], [getattr(f, attr) for f in theirs]
        ma, mb = statistics.median(a), statistics.median(b)
        ratio = float("nan") if faster_is_more is None else ma / mb if faster_is_more else mb / ma
        print(f"{name:36} {_spread(a):>20} {_spread(b):>20} {ratio:6.2f}")
    print("ratio: speed over passthrough's (>1 = we are faster); peak RSS target < 200 MB")
    return 0


def _spread(values: list[float]) -> str:
    """The median of `values` with their range, e.g. `78.1 [70.2-81.0]`."""
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.1f}"
    return f"{median:.1f} [{min(values):.1f}-{max(values):.1f}]"


if __name__ == "__main__":
    sys.exit(main())
