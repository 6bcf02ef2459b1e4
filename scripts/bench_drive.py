"""Drive benchmark: our `Drive` against hyperdrive 9 (the anchor) in one run.

1. The CPython stdlib (the running interpreter's lib/python3.X, without site-packages, tarred
   and extracted to a temp folder): import every file into a new drive, then stat every file.
   Ours also stats again after reopening the store (the lookup cache rebuilt from the log).
2. N files in one folder (N = 2,000 and 8,000): one writeFile each, then readdir; metadata bytes.

Anchor: ../shared/anchors/drive9/{import,flat}.js, installed into .cache/drive9 on first use.
Run: .venv/bin/python scripts/bench_drive.py [--flat 2000,8000] [--skip-anchor]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

import trio

from anchors import ensure_anchor
from hyperfs.drive.drive import Drive

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = ROOT / ".cache" / "drive9"


def make_stdlib(tmp: Path) -> Path:
    """The stdlib folder, through a tar as the issue asks (so both sides read the same files)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    tar_path = tmp / "stdlib.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(stdlib, arcname=stdlib.name, filter=lambda t: None if "/site-packages" in t.name else t)
    with tarfile.open(tar_path) as tar:
        tar.extractall(tmp / "src", filter="tar")
    tar_path.unlink()
    return tmp / "src" / stdlib.name


def walk(src: Path) -> list[tuple[Path, str]]:
    """(local path, drive path) of every regular file in import.js's order (names sorted, into a
    folder as soon as it comes): the order decides how big the paths indexes get."""
    files = []

    def visit(folder: Path, rel: str) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                visit(Path(entry.path), f"{rel}/{entry.name}")
            elif entry.is_file(follow_symlinks=False):
                files.append((Path(entry.path), f"{rel}/{entry.name}"))

    visit(src, "")
    return files


async def open_store(path: Path):  # noqa: ANN201 (the store type lives in hyperfs.core)
    from hyperfs.core.corestore import Corestore

    store = Corestore(str(path))
    await store.ready()
    return store


async def ours_import(src: Path, store_dir: Path) -> dict[str, float]:
    files = walk(src)
    store = await open_store(store_dir)
    drive = await Drive.create(store, name="bench")
    t0 = time.perf_counter()
    total = 0
    async with drive.batch():
        for path, drive_path in files:
            data = path.read_bytes()
            total += len(data)
            await drive.write_file(drive_path, data)
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _, drive_path in files:
        await drive.stat(drive_path)
    stat_s = time.perf_counter() - t0
    out = {
        "files": len(files),
        "MiB": round(total / 1048576, 1),
        "import_s": import_s,
        "stat_all_s": stat_s,
        "metadata_bytes": drive.metadata.byte_length,
        "metadata_blocks": drive.metadata.length,
    }
    key = drive.key
    await store.close()
    store = await open_store(store_dir)
    t0 = time.perf_counter()
    drive = await Drive.open(store, key)
    for _, drive_path in files:
        await drive.stat(drive_path)
    out["stat_all_reopened_s"] = time.perf_counter() - t0
    await store.close()
    return out


async def ours_flat(n: int, store_dir: Path, batch: bool) -> dict[str, float]:
    store = await open_store(store_dir)
    drive = await Drive.create(store, name="flat")
    t0 = time.perf_counter()
    if batch:
        async with drive.batch():
            for i in range(n):
                await drive.write_file(f"/flat/f{i}.txt", f"x{i}".encode())
    else:
        for i in range(n):
            await drive.write_file(f"/flat/f{i}.txt", f"x{i}".encode())
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    listed = len(await drive.readdir("/flat"))
    readdir_s = time.perf_counter() - t0
    out = {"files": n, "import_s": import_s, "readdir_s": readdir_s, "listed": listed}
    out["metadata_bytes"] = drive.metadata.byte_length
    await store.close()
    return out


def anchor(script: str, *args: str) -> dict[str, float]:
    done = subprocess.run(["node", str(ANCHOR / script), *args], capture_output=True, text=True, cwd=ANCHOR)
    if done.returncode != 0:
        raise SystemExit(f"anchor {script} failed: {done.stderr.strip()[-500:]}")
    return {k: float(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def row(label: str, ours: float, theirs: float | None, unit: str = "s") -> None:
    if theirs is None:
        print(f"  {label:28} ours {ours:10.3f} {unit}")
    else:
        ratio = theirs / ours if ours else float("inf")
        print(f"  {label:28} ours {ours:10.3f} {unit}   hyperdrive 9 {theirs:10.3f} {unit}   x{ratio:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flat", default="2000,8000", help="comma-separated N for the one-folder test")
    parser.add_argument("--skip-anchor", action="store_true", help="only our side")
    args = parser.parse_args()
    if not args.skip_anchor:
        ensure_anchor("drive9", "hyperdrive")

    with tempfile.TemporaryDirectory(prefix="bench_drive_") as tmp_name:
        tmp = Path(tmp_name)
        src = make_stdlib(tmp)
        ours = trio.run(ours_import, src, tmp / "ours")
        theirs = None if args.skip_anchor else anchor("import.js", str(src), str(tmp / "hd9"))
        print(f"CPython stdlib: {ours['files']:.0f} files, {ours['MiB']} MiB")
        row("import", ours["import_s"], theirs and theirs["import_s"])
        row("stat every file", ours["stat_all_s"], theirs and theirs["stat_all_s"])
        row("stat every file (reopened)", ours["stat_all_reopened_s"], None)
        row("metadata bytes", ours["metadata_bytes"], theirs and theirs["metadata_bytes"], "B")
        shutil.rmtree(tmp / "ours", ignore_errors=True)
        shutil.rmtree(tmp / "hd9", ignore_errors=True)

        for n in (int(x) for x in args.flat.split(",") if x):
            one = trio.run(ours_flat, n, tmp / f"flat{n}", False)
            many = trio.run(ours_flat, n, tmp / f"flatb{n}", True)
            theirs = None if args.skip_anchor else anchor("flat.js", str(n))
            print(f"{n} files in one folder (metadata {one['metadata_bytes'] / n:.0f} B per file):")
            row("writeFile each", one["import_s"], theirs and theirs["import_s"])
            row("writeFile in a batch", many["import_s"], theirs and theirs["import_s"])
            row("readdir", one["readdir_s"], theirs and theirs["readdir_s"])
            row("metadata bytes", one["metadata_bytes"], theirs and theirs["metadata_bytes"], "B")
            assert one["listed"] == many["listed"] == n
    sys.stdout.flush()


if __name__ == "__main__":
    main()
