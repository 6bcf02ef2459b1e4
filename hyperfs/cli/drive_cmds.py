"""The drive commands: create, info, ls, cat, rm, stat, log, diff, import, export, keys.

A drive is named as `hyperfs.cli.common` says: a local name, z-base-32 id, hex key or
`hyper://<id>`. Import and export are resumable: a file whose size
and mtime already match on the other side is skipped, so running the command again after an
interruption finishes the job.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import stat as stat_mod
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio
from tqdm import tqdm

from hyperfs.cli.common import add_drive_argument, command_adder, local_drive, open_named_drive, registry
from hyperfs.core.z32 import encode_id
from hyperfs.drive.append_tree import join
from hyperfs.drive.drive import SPECIAL_TYPES, Drive, Stat, ms_from_ns
from hyperfs.drive.paths import shown
from hyperfs.errors import (
    DecodingError,
    FileNotFoundInDrive,
    HyperfsError,
    InvalidArgumentError,
    IsADirectoryInDrive,
    LocalFileError,
)

READ_CHUNK = 1 << 20


def register(subparsers: argparse._SubParsersAction) -> None:
    add = command_adder(subparsers)
    add("create", cmd_create, "create a drive with a local name").add_argument("name", help="the name the other commands will know it by")
    add_drive_argument(add("info", cmd_info, "keys, version and sizes of a drive", reads=True))
    p = add("ls", cmd_ls, "list a folder of a drive", reads=True)
    add_drive_argument(p)
    p.add_argument("path", nargs="?", default="/", help="a folder or file in the drive (default: /)")
    p.add_argument("-l", "--long", action="store_true", help="mode, size and mtime too")
    p = add("cat", cmd_cat, "write a file of a drive to stdout", reads=True)
    add_drive_argument(p)
    p.add_argument("path", help="a path in the drive")
    p = add("stat", cmd_stat, "the attributes of a path in a drive", reads=True)
    add_drive_argument(p)
    p.add_argument("path", help="a path in the drive")
    add_drive_argument(add("log", cmd_log, "the history of a drive, oldest first", reads=True))
    p = add("diff", cmd_diff, "what changed in a drive since VERSION", reads=True)
    add_drive_argument(p)
    p.add_argument("version", type=int, help="a version number, as `hyperfs log` shows")
    p = add("rm", cmd_rm, "remove files, symlinks or folders from a drive (one whose Stat is corrupt too)")
    add_drive_argument(p)
    p.add_argument("paths", nargs="+", metavar="path", help="a path in the drive")
    p.add_argument("-r", "--recursive", action="store_true", help="remove folders and what they hold")
    p = add("import", cmd_import, "copy a local folder into a drive, made if the name is new (resumable)")
    p.add_argument("src", type=Path, help="the local folder to copy")
    add_drive_argument(p, optional=True)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = add("export", cmd_export, "copy a drive into a local folder (resumable)", reads=True)
    add_drive_argument(p, optional=True)
    p.add_argument("dest", type=Path, help="the local folder to copy into (made if missing)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add("keys", cmd_keys, "list the drives in the store with their keys", reads=True)


# --- commands -----------------------------------------------------------------------------------


async def cmd_create(store: Any, args: argparse.Namespace) -> int:
    drive = await local_drive(store, args.store, args.name)
    print(f"{args.name}\t{drive.id}\t{drive.key.hex()}")
    return 0


async def cmd_keys(store: Any, args: argparse.Namespace) -> int:
    for name, key in sorted(registry(args.store).items()):
        print(f"{name}\t{encode_id(bytes.fromhex(key))}\t{key}")
    return 0


async def cmd_info(store: Any, args: argparse.Namespace) -> int:
    drive = await open_named_drive(store, args.store, args.drive)
    rows = [
        ("id", drive.id),
        ("key", drive.key.hex()),
        ("discovery key", drive.discovery_key.hex()),
        ("url", f"hyper://{drive.id}"),
        ("writable", "yes" if drive.writable else "no"),
        ("version", drive.version),
        ("metadata", f"{drive.metadata.length} blocks, {drive.metadata.byte_length} bytes"),
        ("content", f"{drive.content.length} blocks, {drive.content.byte_length} bytes"),
    ]
    for label, value in rows:
        print(f"{label + ':':15} {value}")
    return 0


def _long(name: str, st: Stat) -> str:
    mtime = _time_text(st.mtime)
    target = f" -> {st.linkname}" if st.is_symlink() else ""
    return f"{stat_mod.filemode(st.mode)} {st.size:>12} {mtime} {name}{target}"


def _time_text(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


async def cmd_ls(store: Any, args: argparse.Namespace) -> int:
    drive = await open_named_drive(store, args.store, args.drive)
    folder = args.path
    st = await drive.lstat(folder)
    names = sorted(await drive.readdir(folder)) if st.is_dir() else [None]
    status = 0
    for name in names:
        if not args.long:
            print(name if name is not None else folder)
            continue
        path = folder if name is None else join(tuple(p for p in (folder.strip("/"), name) if p))
        try:
            print(_long(name or folder, await drive.lstat(path)))
        except DecodingError as err:  # as ls does: the others are listed, and the status says so
            print(f"hyperfs ls: {err}", file=sys.stderr)
            status = 1
    return status


async def cmd_cat(store: Any, args: argparse.Namespace) -> int:
    drive = await open_named_drive(store, args.store, args.drive)
    out = sys.stdout.buffer
    async for chunk in drive.open_read(args.path):
        out.write(chunk)
    out.flush()
    return 0


async def cmd_rm(store: Any, args: argparse.Namespace) -> int:
    drive = await open_named_drive(store, args.store, args.drive)
    status = 0
    async with drive.batch():  # one append, one signature for the lot
        for path in args.paths:
            try:
                await _remove(drive, path, args.recursive)
            except HyperfsError as err:  # as rm does: the others are removed, and the status says so
                print(f"hyperfs rm: {err}", file=sys.stderr)
                status = 1
    return status


async def _remove(drive: Drive, path: str, recursive: bool) -> None:
    try:
        folder = (await drive.lstat(path)).is_dir()
    except DecodingError:
        folder = False  # a corrupt entry: `unlink` removes it, or says why not
    if not folder:
        await drive.unlink(path)
        return
    if not path.strip("/"):
        raise InvalidArgumentError("refusing to remove the drive's root folder")
    if not recursive:
        raise IsADirectoryInDrive(f"{path} is a folder (-r removes it and what it holds)")
    for name in await drive.readdir(path):
        await _remove(drive, f"{path.rstrip('/')}/{name}", recursive)
    await drive.rmdir(path)


async def cmd_stat(store: Any, args: argparse.Namespace) -> int:
    drive = await open_named_drive(store, args.store, args.drive)
    st = await drive.lstat(args.path)
    print(f"path:    {args.path}")
    print(f"type:    {st.kind()}")
    print(f"mode:    {stat_mod.filemode(st.mode)} ({st.mode & 0o7777:o})")
    print(f"uid/gid: {st.uid}/{st.gid}")
    print(f"size:    {st.size} bytes in {st.blocks} blocks from block {st.offset} (byte {st.byte_offset})")
    print(f"mtime:   {_time_text(st.mtime)} ({st.mtime} ms)")
    print(f"ctime:   {_time_text(st.ctime)} ({st.ctime} ms)")
    if st.is_symlink():
        print(f"target:  {st.linkname}")
    for key, value in sorted(st.metadata.items()):
        print(f"xattr:   {key} = {value!r}")
    return 0


async def cmd_log(store: Any, args: argparse.Namespace) -> int:
    drive = await open_named_drive(store, args.store, args.drive)
    # One entry at a time: a corrupt one is shown as such (its error on stderr), and the
    # versions around it, which `mount --checkout` can show, still are.
    for version in range(drive.version):
        try:
            changes = await drive.history(version, version + 1)  # none for the Index block
        except DecodingError as err:
            print(f"{version}\t?\t?\t?")
            print(f"hyperfs log: {err}", file=sys.stderr)
            continue
        for change in changes:
            size: int | str = 0
            if change.value:
                try:
                    size = Stat.decode(change.value, change.version).size
                except DecodingError as err:
                    size = "?"
                    print(f"hyperfs log: {err}", file=sys.stderr)
            print(f"{change.version}\t{change.type}\t{change.name}\t{size}")
    return 0


async def cmd_diff(store: Any, args: argparse.Namespace) -> int:
    drive = await open_named_drive(store, args.store, args.drive)
    for change in await drive.diff(args.version):
        print(f"{'+' if change.type == 'put' else '-'} {change.name}\t(version {change.version})")
    return 0


# --- import ------------------------------------------------------------------------------------


def _walk(src: Path, skipped: list[str]) -> list[tuple[str, os.stat_result, Path]]:
    """(drive path, lstat, local path) of every folder, file and symlink below `src`, in
    DEP-0000's order (names sorted, into a folder as soon as it comes; this order also keeps
    the paths indexes smallest); anything else, and what cannot be read, goes to `skipped`."""
    out: list[tuple[str, os.stat_result, Path]] = []

    def entries(folder: Path, rel: str) -> tuple[str, Iterator[os.DirEntry[str]]]:
        try:
            return rel, iter(sorted(os.scandir(folder), key=lambda e: e.name))
        except OSError as err:
            skipped.append(f"{folder}: {err.strerror}")
            return rel, iter(())

    stack = [entries(src, "")]  # a stack, not recursion: folders may nest thousands deep
    while stack:
        rel, it = stack[-1]
        entry = next(it, None)
        if entry is None:
            stack.pop()
            continue
        path, drive_path = Path(entry.path), f"{rel}/{entry.name}"
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as err:
            skipped.append(f"{path}: {err.strerror}")
            continue
        if stat_mod.S_ISDIR(st.st_mode):
            out.append((drive_path, st, path))
            stack.append(entries(path, drive_path))
        elif stat_mod.S_IFMT(st.st_mode) in (stat_mod.S_IFREG, stat_mod.S_IFLNK, *SPECIAL_TYPES):
            out.append((drive_path, st, path))
        else:
            skipped.append(f"{path}: a device node (a drive holds none)")
    return out


def _same(st: Stat, local: os.stat_result) -> bool:
    """Whether an entry needs no copying: same kind, and for a file same size and mtime (ms)."""
    if stat_mod.S_IFMT(st.mode) != stat_mod.S_IFMT(local.st_mode):
        return False
    if st.is_dir():
        return True
    same_time = st.mtime == ms_from_ns(local.st_mtime_ns)
    return same_time and (st.is_symlink() or st.size == local.st_size)


async def cmd_import(store: Any, args: argparse.Namespace) -> int:
    src: Path = args.src
    if not src.is_dir():
        raise LocalFileError(f"{src} is not a folder")
    drive = await open_named_drive(store, args.store, args.drive, create=True)
    skipped: list[str] = []
    entries = await trio.to_thread.run_sync(_walk, src, skipped)
    total = sum(st.st_size for _, st, _ in entries if stat_mod.S_ISREG(st.st_mode))
    done = unchanged = 0
    with tqdm(total=total, unit="B", unit_scale=True, disable=args.quiet, file=sys.stderr) as bar:
        async with drive.batch():
            for drive_path, local, path in entries:
                try:
                    have: Stat | None = await drive.lstat(drive_path)
                except FileNotFoundInDrive:
                    have = None
                except HyperfsError as err:  # a name the drive cannot hold
                    skipped.append(f"{path}: {err}")
                    continue
                if have is not None and _same(have, local):
                    unchanged += 1
                    bar.update(local.st_size if stat_mod.S_ISREG(local.st_mode) else 0)
                    continue
                try:
                    await _import_one(drive, drive_path, local, path, have, bar)
                except LocalFileError as err:
                    skipped.append(str(err))
                    continue
                done += 1
    print(f"imported {done}, unchanged {unchanged}, skipped {len(skipped)} into {drive.id} (version {drive.version})")
    for line in skipped:
        print(f"skipped: {shown(line)}", file=sys.stderr)
    return 0


async def _import_one(
    drive: Drive, drive_path: str, local: os.stat_result, path: Path, have: Stat | None, bar: tqdm
) -> None:
    mode, mtime = stat_mod.S_IMODE(local.st_mode), ms_from_ns(local.st_mtime_ns)
    if stat_mod.S_ISDIR(local.st_mode):
        if have is None:
            await drive.mkdir(drive_path, mode=mode, mtime=mtime, ctime=mtime)
        return
    if have is not None and not (have.is_file() and stat_mod.S_ISREG(local.st_mode)):
        await drive.unlink(drive_path)  # a file becomes a symlink or the other way round
    if stat_mod.S_ISLNK(local.st_mode):
        await drive.symlink(os.readlink(path), drive_path, mtime=mtime)
        return
    if not stat_mod.S_ISREG(local.st_mode):
        await drive.mknod(drive_path, local.st_mode, mtime=mtime)
        return
    writer = await drive.open_write(drive_path, mode=mode, uid=0, gid=0, mtime=mtime, ctime=mtime)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                await writer.write(chunk)
                bar.update(len(chunk))
    except OSError as err:
        writer.abort()
        raise LocalFileError(f"{path}: {err.strerror}", err.errno or 5) from None
    await writer.close()


# --- export ------------------------------------------------------------------------------------


async def _drive_walk(drive: Drive) -> list[tuple[str, Stat]]:
    """(path, lstat) of everything in the drive, parents first, names sorted."""
    out: list[tuple[str, Stat]] = []
    stack = [("", iter(sorted(await drive.readdir("/"))))]
    while stack:
        folder, it = stack[-1]
        name = next(it, None)
        if name is None:
            stack.pop()
            continue
        path = f"{folder}/{name}"
        st = await drive.lstat(path)
        out.append((path, st))
        if st.is_dir():
            stack.append((path, iter(sorted(await drive.readdir(path)))))
    return out


async def cmd_export(store: Any, args: argparse.Namespace) -> int:
    dest = args.dest
    if os.path.lexists(dest) and not dest.is_dir():
        raise LocalFileError(f"{dest} is not a folder")
    drive = await open_named_drive(store, args.store, args.drive)
    entries = await _drive_walk(drive)
    total = sum(st.size for _, st in entries if st.is_file())
    skipped: list[str] = []
    left_out: set[str] = set()  # folders not made here (something else is in their place)
    done = unchanged = 0
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with tqdm(total=total, unit="B", unit_scale=True, disable=args.quiet, file=sys.stderr) as bar:
            for path, st in entries:
                if path.rpartition("/")[0] in left_out:  # the walk reaches a folder before its entries
                    if st.is_dir():
                        left_out.add(path)
                    bar.update(st.size if st.is_file() else 0)
                    continue
                local = dest / path.lstrip("/")
                try:
                    have = local.lstat()
                except FileNotFoundError:
                    have = None
                if have is not None and _same(st, have):
                    unchanged += 1
                    bar.update(st.size if st.is_file() else 0)
                    continue
                refused = await _export_one(drive, path, st, local, have, bar)
                if refused is None:
                    done += 1
                elif st.is_dir():
                    left_out.add(path)
                    skipped.append(f"{local}: {refused} (the drive's folder, with all in it)")
                else:
                    skipped.append(f"{local}: {refused}")
            # Folder modes and times last: writing inside a folder changes its mtime, and a
            # read-only folder could not have been filled.
            for path, st in reversed(entries):
                if st.is_dir() and path not in left_out:
                    local = dest / path.lstrip("/")
                    os.chmod(local, stat_mod.S_IMODE(st.mode))
                    _set_times(local, st)
    except OSError as err:
        raise LocalFileError(f"{err.filename or dest}: {err.strerror}", err.errno or 5) from None
    print(f"exported {done}, unchanged {unchanged}, skipped {len(skipped)} to {dest}")
    for line in skipped:
        print(f"skipped: {shown(line)}", file=sys.stderr)
    return 0


def _set_times(local: Path, st: Stat) -> None:
    ns = st.mtime * 1_000_000
    os.utime(local, ns=(ns, ns), follow_symlinks=False)


async def _export_one(
    drive: Drive, path: str, st: Stat, local: Path, have: os.stat_result | None, bar: tqdm
) -> str | None:
    """Write one entry; else say why not (something of another kind is in its place, or it
    is a device node, which only another writer can have put in the drive)."""
    if have is not None and (stat_mod.S_ISDIR(have.st_mode) != st.is_dir()):
        return "exists as another kind of file"
    if st.is_special() and stat_mod.S_IFMT(st.mode) not in SPECIAL_TYPES:
        return f"a {st.kind()} in the drive (not made here)"
    if st.is_dir():
        local.mkdir(mode=0o700, exist_ok=True)
        return None
    if have is not None:
        local.unlink()
    if st.is_symlink():
        os.symlink(st.linkname, local)
        _set_times(local, st)
        return None
    if st.is_special():
        os.mknod(local, st.mode)  # a FIFO or a socket
        _set_times(local, st)
        return None
    # Written under a temporary name and renamed: an interrupted export leaves no half file.
    part = local.with_name("." + hashlib.sha256(os.fsencode(local.name)).hexdigest()[:16] + ".hyperfs-part")
    with open(part, "wb") as f:
        async for chunk in drive.open_read(path):
            f.write(chunk)
            bar.update(len(chunk))
    os.chmod(part, stat_mod.S_IMODE(st.mode))
    _set_times(part, st)
    os.replace(part, local)
    return None
