"""`hyperfs mount` and `hyperfs unmount`.

`mount` without --foreground starts the serving process detached (its own session, stdio away
from the terminal) and returns only when that process says the folder is usable, printing the
drive's key; a failure before that is printed here. Each serving process leaves a pid file so
`unmount` can wait for it to finish writing and release the store.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

import trio

from hyperfs.cli.common import (
    DEFAULT_DRIVE,
    DRIVE_HELP,
    add_parser,
    awaiting_peers,
    describe,
    dial_peers,
    follow_writer,
    holds_drive,
    nursery,
    open_named_drive,
    open_store,
    say_on_stderr,
    sole_error,
)
from hyperfs.core.z32 import decode_key
from hyperfs.drive.drive import PEER_TIMEOUT
from hyperfs.errors import FileNotFoundInDrive, HyperfsError, InvalidKeyError, MountError

UNMOUNT_WAIT = 120.0  # seconds `unmount` waits for the serving process to finish writing
FOLLOWING = "read-only: another process writes this store (its changes show here as it makes them)"


def register(subparsers: argparse._SubParsersAction) -> None:
    about = (
        "mount a drive on an empty folder (returns once it is usable, printing the drive's key); "
        "while another process holds the store, the mount is read-only and shows what that process writes"
    )
    mount = add_parser(subparsers, "mount", "mount a drive as a folder", about)
    mount.add_argument("mountpoint", type=Path, help="an empty folder")
    mount.add_argument("drive", nargs="?", help=f"{DRIVE_HELP} (default: {DEFAULT_DRIVE}, made on first use)")
    mount.add_argument("--foreground", action="store_true", help="serve in this process")
    mount.add_argument("--checkout", type=int, metavar="VERSION", help="mount an old version, read-only")
    mount.add_argument(
        "--peer",
        metavar="HOST:PORT",
        action="append",
        help="replicate with this peer while mounted (files fetched as read, updates shown live); repeat for several",
    )
    mount.add_argument(
        "--peer-timeout",
        type=float,
        default=PEER_TIMEOUT,
        metavar="SECONDS",
        help=f"a read of a block no peer sends in this time fails with ETIMEDOUT (default: {PEER_TIMEOUT:g}; 0 waits forever)",
    )
    mount.add_argument("--verbose", action="store_true", help="debug logging")
    mount.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    mount.set_defaults(func=cmd_mount)
    about = "unmount a drive mounted with `hyperfs mount`, once its writes are stored"
    unmount = add_parser(subparsers, "unmount", "unmount a mounted drive", about)
    unmount.add_argument("mountpoint", type=Path, help="the folder `hyperfs mount` mounted")
    unmount.set_defaults(func=cmd_unmount)


def runtime_dir() -> Path:
    """Where pid files and daemon logs go: $XDG_RUNTIME_DIR/hyperfs, else a per-user temp folder."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "hyperfs" if base else Path(tempfile.gettempdir()) / f"hyperfs-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def pid_file(mountpoint: Path) -> Path:
    digest = hashlib.sha256(os.fsencode(os.path.realpath(mountpoint))).hexdigest()[:24]
    return runtime_dir() / f"{digest}.pid"


def cmd_mount(args: argparse.Namespace) -> int:
    check_mountpoint(args.mountpoint)
    if args.foreground or args.ready_fd is not None:
        return _serve(args)
    return _detach(args)


def check_mountpoint(path: Path) -> None:
    """MountError unless `path` is an existing, empty folder that is not a mount point yet. A
    hyperfs mount whose process died (a kill -9, a crash) is unmounted first, with a note:
    nothing answers there any more, and the store keeps what that process had stored."""
    # First, before any stat of it: the folder of a mount whose process died answers ENOTCONN.
    real = os.path.realpath(path)
    if is_mounted(real):
        if not _dead_hyperfs_mount(path, real):
            raise MountError(f"{path} is already a mount point (hyperfs unmount {path} first)")
        _unmount_dead(path, real)
    if not os.path.lexists(path):
        raise MountError(f"{path} is not a folder (it does not exist; mkdir -p {path} first)")
    if not path.is_dir():
        raise MountError(f"{path} is not a folder")
    try:
        with os.scandir(path) as entries:
            busy = next(entries, None) is not None
    except OSError as err:
        raise MountError(f"cannot mount on {path}: {err.strerror}") from None
    if busy:
        # Mounting would hide its files while mounted; refuse rather than surprise.
        raise MountError(f"{path} is not empty (mount on an empty folder, or import it: hyperfs import {path})")


def _detach(args: argparse.Namespace) -> int:
    read_end, write_end = os.pipe()
    argv = [sys.executable, "-m", "hyperfs", "--store", os.path.abspath(args.store), "mount", os.path.abspath(args.mountpoint)]
    if args.drive:
        argv.append(args.drive)
    if args.checkout is not None:
        argv += ["--checkout", str(args.checkout)]
    for peer in args.peer or ():
        argv += ["--peer", peer]
    argv += ["--peer-timeout", str(args.peer_timeout)]
    if args.verbose:
        argv.append("--verbose")
    argv += ["--ready-fd", str(write_end)]
    log_path = pid_file(args.mountpoint).with_suffix(".log")
    with open(log_path, "ab") as log_file:
        child = subprocess.Popen(
            argv,
            pass_fds=(write_end,),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    os.close(write_end)
    try:
        with os.fdopen(read_end, "r") as ready:
            for line in map(str.strip, ready):
                if not line.startswith("note "):
                    break
                print(f"hyperfs mount: {line.removeprefix('note ')}", file=sys.stderr, flush=True)
            else:
                line = ""
    except BaseException:
        # Ctrl-C while it waits (for a peer, say): the mount must not come up later, or hold
        # the store, behind the user's back.
        child.terminate()
        child.wait()
        pid_file(args.mountpoint).unlink(missing_ok=True)  # it had no time to
        raise
    if line.startswith("ready "):
        _print_ready(line)
        return 0
    child.wait()
    message = line.removeprefix("error ") if line.startswith("error ") else f"see {log_path}"
    raise MountError(f"mount failed: {message}")


def _serve(args: argparse.Namespace) -> int:
    from hyperfs.fuse.mount import configure_logging

    configure_logging(args.verbose)
    pids = pid_file(args.mountpoint)
    pids.write_text(str(os.getpid()))
    try:
        trio.run(_serve_async, args)
    except Exception as err:
        cause = sole_error(err)  # a failure inside the mount's nurseries comes in a group
        if isinstance(cause, HyperfsError):
            _report(args, f"error {cause}")
            raise cause from None
        _report(args, f"error {type(cause).__name__}: {cause}")
        raise
    finally:
        pids.unlink(missing_ok=True)
    return 0


async def _serve_async(args: argparse.Namespace) -> None:
    from hyperfs.fuse.mount import serve

    async with _open_mounted(args) as drive:
        read_only = args.checkout is not None or not drive.writable
        drive.peer_timeout = args.peer_timeout

        def ready() -> None:
            if args.checkout is not None:  # a fixed version: nothing from elsewhere shows in it
                note = f" read-only: version {args.checkout} of {drive.key.hex()[:8]}…, as it was then"
            else:
                note = f" {FOLLOWING}" if drive.store.read_only else ""
            _report(args, f"ready {drive.key.hex()}{note}")

        await serve(
            drive,
            str(args.mountpoint),
            read_only=read_only,
            live=read_only and args.checkout is None,
            store_dir=str(args.store),
            on_ready=ready,
        )


@asynccontextmanager
async def _open_mounted(args: argparse.Namespace) -> AsyncIterator[Any]:
    """`open_drive` for the mount `args` asks for. A key this store does not hold, with no
    --peer, comes from a peer sharing it on the LAN (mDNS), as for `clone`."""
    from hyperfs.cli.net_cmds import lan_peer

    def opened(peers: Sequence[str]) -> AbstractAsyncContextManager[Any]:
        return open_drive(args.store, args.drive, args.checkout, peers, describe(args), lambda text: _note(args, text))

    async with AsyncExitStack() as stack:
        try:
            drive = await stack.enter_async_context(opened(args.peer or ()))
        except FileNotFoundInDrive:
            key = None if args.peer else _key_named(args.drive)
            if key is None:
                raise
            _note(args, f"{args.drive} is not in this store: looking for a peer sharing it on the LAN")
            drive = await stack.enter_async_context(opened([await lan_peer(key)]))
        yield drive


def _key_named(text: str | None) -> bytes | None:
    """The drive key `text` is (z-base-32 id, hex key or URL), if it is one."""
    try:
        return decode_key(text) if text else None
    except InvalidKeyError:
        return None


def _report(args: argparse.Namespace, line: str) -> None:
    """Tell the waiting parent (or the terminal, in the foreground) how the mount went, once."""
    if args.ready_fd is None:
        if line.startswith("ready "):
            _print_ready(line)
        return
    try:
        os.write(args.ready_fd, (line + "\n").encode())
        os.close(args.ready_fd)
    except OSError:
        pass  # already told
    args.ready_fd = None
    # The parent has its answer; from now on nothing may write to its terminal.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _note(args: argparse.Namespace, text: str) -> None:
    """Tell the waiting parent (or the terminal, in the foreground) something before the mount
    is ready; the parent prints it and goes on waiting."""
    if args.ready_fd is None:
        print(f"hyperfs mount: {text}", file=sys.stderr, flush=True)
        return
    with suppress(OSError):  # the parent has gone: nobody to tell
        os.write(args.ready_fd, f"note {text}\n".encode())


def _print_ready(line: str) -> None:
    """The key of a mount that is ready on stdout; what it says about itself on stderr."""
    key, _, note = line.removeprefix("ready ").partition(" ")
    print(key, flush=True)
    if note:
        print(f"hyperfs mount: {note}", file=sys.stderr, flush=True)


@asynccontextmanager
async def open_drive(
    store_dir: Path,
    name: str | None,
    checkout: int | None,
    peers: Sequence[str] = (),
    holder: str = "hyperfs mount",
    say: Callable[[str], None] = say_on_stderr,
) -> AsyncIterator[Any]:
    """The drive to mount: the one `name` names (a local name, id, key or URL, as for the drive
    commands), else the store's default drive (made on first use); at `checkout` when given;
    replicating with `peers` (HOST:PORT each) for as long as it is open, when given. The store
    is held as `holder` meanwhile (see `hyperfs.cli.common.open_store`); when another process
    holds it (and no peer is named, whose blocks would need storing), it is opened read-only and
    follows what that process writes. What it waits for from the peers, if long, it tells `say`."""
    from hyperfs.core.protocol.replicator import store_replicator

    async with open_store(store_dir, holder, reads=not peers) as store, nursery() as tasks:
        if store.read_only:
            tasks.start_soon(follow_writer, store)
        if peers:
            await store_replicator(store)
            # A drive this store holds mounts while its peers are unreachable (reads of what is
            # not here time out until one is back); for one it does not hold, that is an error.
            offline = say if await holds_drive(store, store_dir, name or DEFAULT_DRIVE) else None
            tasks.start_soon(dial_peers, store, peers, offline)  # before the drive opens: its index may come from them
        # A drive without its secret key fetches its whole metadata log on open (Drive.open).
        async with awaiting_peers(name or DEFAULT_DRIVE, peers, say) if peers else nullcontext():
            drive = await open_named_drive(store, store_dir, name or DEFAULT_DRIVE)
        try:
            yield drive if checkout is None else await drive.checkout(checkout)
        finally:
            await drive.close()
            tasks.cancel_scope.cancel()


def cmd_unmount(args: argparse.Namespace) -> int:
    mountpoint = os.path.realpath(args.mountpoint)
    pids = pid_file(args.mountpoint)
    try:
        pid = int(pids.read_text())
    except (OSError, ValueError):
        pid = None
    if not is_mounted(mountpoint):
        raise MountError(f"{args.mountpoint} is not mounted")
    done = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
    if done.returncode != 0:
        if "busy" in done.stderr:
            raise MountError(f"{args.mountpoint} is busy: a program has a file or folder open in it (close it or cd out, then unmount again)")
        raise MountError(done.stderr.strip() or f"fusermount3 -u {mountpoint} failed")
    if pid is not None:
        wait_for_exit(pid, UNMOUNT_WAIT)
        pids.unlink(missing_ok=True)  # a killed process left it behind
    return 0


def is_mounted(path: str) -> bool:
    """Whether something is mounted on `path` (an absolute, resolved path), per /proc/self/mounts
    (which, unlike os.path.ismount, also lists a FUSE mount whose process has died)."""
    try:
        return mount_type(path) is not None
    except OSError:
        return os.path.ismount(path)


def mount_type(path: str) -> str | None:
    """The file system type mounted last on `path` (an absolute, resolved path), per
    /proc/self/mounts, or None; `fuse.hyperfs` for ours."""
    with open("/proc/self/mounts") as mounts:
        entries = [line.split()[1:3] for line in mounts]
    # The kernel escapes space, tab, newline and backslash as octal.
    types = [kind for point, kind in entries if re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), point) == path]
    return types[-1] if types else None


def _dead_hyperfs_mount(path: Path, real: str) -> bool:
    """Whether `real` (`path` resolved) is a hyperfs mount whose process is gone: its pid file
    names no running process (a live one is never asked, in case it is busy), and a statfs,
    which the kernel always sends on (a stat may come from its cache), answers ENOTCONN."""
    try:
        if mount_type(real) != "fuse.hyperfs":
            return False
    except OSError:
        return False
    try:
        if _running(int(pid_file(path).read_text())):
            return False
    except (OSError, ValueError):
        pass  # no pid file (a mount made elsewhere): the statfs tells
    try:
        os.statvfs(real)
    except OSError as err:
        return err.errno == errno.ENOTCONN
    return False


def _unmount_dead(path: Path, real: str) -> None:
    """Unmount the dead hyperfs mount on `real`, lazily if a program still has something open
    or its working folder there (those get ENOTCONN either way), and say so."""
    done = subprocess.run(["fusermount3", "-u", real], capture_output=True, text=True)
    if done.returncode != 0:
        done = subprocess.run(["fusermount3", "-u", "-z", real], capture_output=True, text=True)
    if done.returncode != 0:
        raise MountError(f"{path} is a mount whose process died, and fusermount3 -u failed: {done.stderr.strip()}")
    pid_file(path).unlink(missing_ok=True)
    print(f"hyperfs: the last mount on {path} had died (nothing answered there): unmounted it", file=sys.stderr)


def wait_for_exit(pid: int, timeout: float) -> None:
    """Wait until process `pid` is gone (it flushes and closes the store after the unmount)."""
    deadline = time.monotonic() + timeout
    while _running(pid):
        if time.monotonic() > deadline:
            raise MountError(f"the mount process {pid} did not exit within {timeout:.0f} s")
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    # A zombie has finished; whoever started it reaps it.
    return state not in ("Z", "X")
