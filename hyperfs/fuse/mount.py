"""A mount's life: mount the drive, say when the folder is usable, follow the drive as it grows,
flush open files and unmount on SIGINT/SIGTERM, and clean up after `fusermount3 -u`."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import pyfuse3
import trio

from hyperfs.drive.paths import holdable
from hyperfs.errors import DecodingError, HyperfsError, MountError
from hyperfs.fuse.errors import log
from hyperfs.fuse.inodes import join, split
from hyperfs.fuse.operations import DriveOperations

# Live mounts (the drive grows from elsewhere) are told of changes; the timeout only bounds what
# a missed notice could cost.
LIVE_CACHE_TIMEOUT = 30.0
CACHE_TIMEOUT = 300.0
SYNCFS_TIMEOUT = 30.0  # seconds the kernel may take to hand us its dirty pages at shutdown
# Closed files reach the drive's cores this long after, grouped: an untar's files share appends.
COMMIT_DELAY = 0.05
READAHEAD_KB = 1024  # = max_write: the largest request libfuse takes


def mount_options(read_only: bool) -> set[str]:
    """The FUSE options: the kernel checks permissions from our modes, and a read-only mount is
    mounted `ro` so every write gets EROFS from the kernel itself, as on a local file system."""
    options = set(pyfuse3.default_options) | {"fsname=hyperfs", "subtype=hyperfs"}
    if read_only:
        options.add("ro")
    return options


async def serve(
    drive: Any,
    mountpoint: str,
    *,
    read_only: bool = False,
    live: bool = False,
    store_dir: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Mount `drive` on `mountpoint` and serve it until unmounted or signalled; returns once the
    folder is unmounted and every open file's content is in the drive."""
    ops = DriveOperations(
        drive,
        read_only=read_only,
        cache_timeout=LIVE_CACHE_TIMEOUT if live else CACHE_TIMEOUT,
        store_dir=store_dir,
        mountpoint=mountpoint,
    )
    pyfuse3.init(ops, mountpoint, mount_options(ops.read_only))
    try:
        async with drive.grouped(COMMIT_DELAY), trio.open_nursery() as nursery:
            ops.nursery = nursery
            nursery.start_soon(_stop_on_signal, ops, mountpoint)
            nursery.start_soon(_announce_ready, drive, mountpoint, on_ready)
            if live:
                nursery.start_soon(follow, ops)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
    finally:
        await ops.flush_all()
        pyfuse3.close(unmount=True)


async def _announce_ready(drive: Any, mountpoint: str, on_ready: Callable[[], None] | None) -> None:
    # A stat of the mount point is answered by our own loop: once it returns, the kernel has
    # finished FUSE_INIT and the folder is usable.
    try:
        st = await trio.to_thread.run_sync(os.stat, mountpoint)
    except OSError as err:
        # The root's EIO says nothing: the drive's own error does (a head entry that is no Node).
        try:
            await drive.lstat("/")
        except HyperfsError as cause:
            hint = " (a version from before it mounts with --checkout)" if isinstance(cause, DecodingError) else ""
            raise MountError(f"{mountpoint}: the drive's root cannot be read: {cause}{hint}") from cause
        raise MountError(f"{mountpoint}: the mounted folder cannot be read: {err}") from err
    raise_readahead(st.st_dev)
    if on_ready is not None:
        on_ready()


def raise_readahead(dev: int) -> None:
    """Let the kernel read ahead READAHEAD_KB on this mount (its default, 128 KiB, caps each
    FUSE read at that size; larger reads cost fewer requests). Only root may; others keep it."""
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(READAHEAD_KB))
    except OSError as err:
        log.debug("read-ahead stays as it is: %s", err)


async def _stop_on_signal(ops: DriveOperations, mountpoint: str) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("signal %d: flushing open files and unmounting", signum)
            # The kernel's dirty pages first (writeback cache): syncfs makes it send them to
            # us, so it runs in a thread while this loop answers. Bounded: if the kernel stops
            # sending (a lazy unmount cut the mount away), a syncfs waiting on us would never
            # return and the process would never exit; what was flushed so far is kept.
            with trio.move_on_after(SYNCFS_TIMEOUT) as waited:
                await trio.to_thread.run_sync(syncfs, mountpoint, abandon_on_cancel=True)
            if waited.cancelled_caught:
                log.warning("syncfs of %s took over %.0fs; unmounting with what was flushed", mountpoint, SYNCFS_TIMEOUT)
            await ops.flush_all()
            pyfuse3.terminate()
            return


def syncfs(path: str) -> None:
    """syncfs(2) on the file system of `path`, releasing the GIL (pyfuse3.syncfs holds it, which
    would stop the loop that must answer the kernel's writes)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _LIBC.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


_LIBC = ctypes.CDLL(None, use_errno=True)


async def follow(ops: DriveOperations) -> None:
    """Tell the kernel what changed each time the drive grows underneath the mount."""
    version = ops.drive.version
    while True:
        new_version = await ops.drive.wait_version(version)
        try:
            changes = await ops.drive.diff(version)
        except HyperfsError as err:
            # A new entry that does not decode (a corrupt block, a hostile peer's): nothing to
            # tell the kernel, whose cache of what it shows ages out anyway; the mount goes on.
            log.warning("drive %s: the changes after version %d do not read: %s", ops.drive.id, version, err)
            changes = []
        version = new_version
        for path in sorted({path for change in changes if (path := _shown(change.name)) is not None}):
            await invalidate(ops, path)


def _shown(name: str) -> str | None:
    """Where the mount shows drive entry `name`: None for one no path can name (`holdable`)."""
    path = "/" + name.strip("/")
    return path if all(holdable(part) for part in path[1:].split("/")) else None


async def invalidate(ops: DriveOperations, path: str) -> None:
    """Drop what the kernel caches for `path`: its entry in each folder on the way (a new file
    may sit under folders the kernel knows as absent), its attributes and data, its folder's."""
    parent = "/"
    for name in path.strip("/").split("/"):
        parent_ino = ops.inodes.known(parent)
        if parent_ino is None:
            break
        pyfuse3.invalidate_entry_async(parent_ino, name.encode("utf-8"), ignore_enoent=True)
        parent = join(parent, name)
    for known in (ops.inodes.known(path), ops.inodes.known(split(path)[0])):
        if known is not None:
            try:
                # A blocking write to /dev/fuse: off the loop, which may have to answer the kernel.
                await trio.to_thread.run_sync(pyfuse3.invalidate_inode, known)
            except OSError:
                pass  # the kernel had forgotten it already


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
