"""What the command groups share: the store folder, naming drives, and the trio helpers for peers.

A store folder is used by one `hyperfs` process at a time (RocksDB locks it). Each command takes
an advisory lock on `hyperfs.lock` in the folder before opening it and writes there who it is, so
a second command meets one clear line naming the holder instead of RocksDB's lock error. The lock
is `flock`: the kernel drops it when the holder exits, even when killed.

A drive is named by a local name (kept in `drives.json` in the store folder, with its key), its
z-base-32 id, its hex key or `hyper://<id>`.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, NoReturn

import trio

from hyperfs.core.z32 import decode_key
from hyperfs.drive.drive import Drive
from hyperfs.errors import (
    FileNotFoundInDrive,
    HyperfsError,
    InvalidArgumentError,
    InvalidKeyError,
    LocalFileError,
    NotWritableError,
    PeerUnreachableError,
    StoreInUseError,
    UnknownDriveError,
)

log = logging.getLogger("hyperfs.cli")

DEFAULT_DRIVE = "default"  # the drive `hyperfs mount`, import and export use without a name
DRIVE_HELP = "a local name, z-base-32 id, hex key or hyper:// URL"
REGISTRY = "drives.json"
LOCK_FILE = "hyperfs.lock"
REDIAL_DELAY = 1.0  # seconds between attempts to reach a peer that dropped
PEER_WAIT_NOTICE = 5.0  # seconds a command waits for a drive from peers before it says so
# Seconds between looks at what the process holding a store wrote: where its files cannot be
# watched; where they can, a look anyway now and then (for a change the watch missed); and the
# least between two looks while it writes.
FOLLOW_INTERVAL = 0.5
FOLLOW_SAFETY = 5.0
FOLLOW_GAP = 0.05

Command = Callable[[Any, argparse.Namespace], Awaitable[int]]


# --- commands on a store ------------------------------------------------------------------------


def command_adder(subparsers: argparse._SubParsersAction) -> Callable[..., argparse.ArgumentParser]:
    """`add(name, func, help, reads=False, holds=True)`: a subcommand running `await func(store,
    args)` on the open store; one that only `reads` it also runs while another process holds the
    store, and one that `holds` it not at all (a long-lived reader) lets a writer start beside it."""

    def add(name: str, func: Command, help: str, reads: bool = False, holds: bool = True) -> argparse.ArgumentParser:
        parser = add_parser(subparsers, name, help)
        parser.set_defaults(func=lambda args: trio.run(run_on_store, func, args, reads, holds))
        return parser

    return add


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make `parser`'s usage mistakes one line, like every other error of ours."""

    def error(message: str) -> NoReturn:
        # argparse would print the whole usage first; --help has it.
        parser.exit(2, f"{parser.prog}: {message} (see {parser.prog} --help)\n")

    parser.error = error  # type: ignore[method-assign]
    return parser


def add_parser(subparsers: argparse._SubParsersAction, name: str, help: str, about: str = "") -> argparse.ArgumentParser:
    """A subcommand whose usage mistakes are one line."""
    return one_line_errors(subparsers.add_parser(name, help=help, description=about or help))


def add_drive_argument(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    """The `drive` argument of a command, with what may name one (and, if optional, its default)."""
    if optional:
        parser.add_argument("drive", nargs="?", default=DEFAULT_DRIVE, help=f"{DRIVE_HELP} (default: {DEFAULT_DRIVE})")
    else:
        parser.add_argument("drive", help=DRIVE_HELP)


async def run_on_store(func: Command, args: argparse.Namespace, reads: bool = False, holds: bool = True) -> int:
    async with open_store(args.store, describe(args), reads=reads, holds=holds) as store:
        return await func(store, args)


def describe(args: argparse.Namespace) -> str:
    """The command as the user would recognise it, e.g. `hyperfs mount /home/me/Drive`."""
    words = ["hyperfs", args.command]
    for name in ("mountpoint", "src", "drive", "key", "dest"):
        value = getattr(args, name, None)
        if value is not None:
            words.append(os.path.abspath(value) if isinstance(value, Path) else str(value))
    return " ".join(words)


@asynccontextmanager
async def open_store(store_dir: Path, holder: str, reads: bool = False, holds: bool = True) -> AsyncIterator[Any]:
    """The Corestore in `store_dir` (made if new), held by this process as `holder` until closed;
    StoreInUseError when another process holds it, unless the caller only `reads`: it then gets
    the store read-only, as it is at this moment (a mount's drive as the mount has written it;
    `Corestore.catch_up` moves it on). A reader that `holds` nothing always gets it so."""
    from hyperfs.core.corestore import Corestore

    with ExitStack() as lock:
        read_only = not holds
        if holds:
            try:
                lock.enter_context(store_lock(store_dir, holder))
            except StoreInUseError:
                if not reads:
                    raise
                read_only = True
        store = Corestore(str(store_dir), read_only=read_only)
        await store.ready()
        try:
            yield store
        finally:
            await store.close()


async def follow_writer(store: Any) -> None:
    """Take in what the process holding read-only `store` writes, each time it changes the
    store's files (or every FOLLOW_INTERVAL where they cannot be watched), until cancelled. A
    failure to, say while that process is opening the store, is retried at the next change."""
    with store.watch() as watch:
        while True:  # a look first: what changed before the watch began is seen too
            try:
                await store.catch_up()
            except HyperfsError as err:  # the store as seen now; the next look may find it whole
                log.warning("could not follow the store's writer this time: %s", err)
            # A busy writer changes its files all the time: its changes meanwhile make one look.
            await trio.sleep(FOLLOW_GAP)
            await watch.wait(FOLLOW_SAFETY if watch.watching else FOLLOW_INTERVAL)


@contextmanager
def store_lock(store_dir: Path, holder: str) -> Iterator[None]:
    """Hold `store_dir` for this process, recording `holder` and our pid for whoever comes next."""
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(store_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except (FileExistsError, NotADirectoryError):
        raise LocalFileError(f"the store {store_dir} is not a folder") from None
    except OSError as err:
        raise LocalFileError(f"cannot use the store {store_dir}: {err.strerror}", err.errno or 5) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreInUseError(_in_use(store_dir, fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": holder}).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _in_use(store_dir: Path, fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0))
        who = f"`{record['command']}` (pid {int(record['pid'])})"
        command = str(record["command"])
    except (OSError, ValueError, KeyError, TypeError):  # the holder has not written it yet
        who, command = "another hyperfs process", ""
    if command.startswith("hyperfs mount "):
        advice = "copy files into the mount, or unmount first"
    elif command.startswith(("hyperfs share", "hyperfs seed")):
        advice = "stop it first (Ctrl-C), or use another --store"
    else:
        advice = "wait for it to finish, or use another --store"
    return f"store {store_dir} is in use by {who}; {advice}"


# --- naming drives ------------------------------------------------------------------------------


def registry(store_dir: Path) -> dict[str, str]:
    """The store's local drive names and their hex keys."""
    try:
        return json.loads((store_dir / REGISTRY).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise LocalFileError(f"cannot read {store_dir / REGISTRY}: {err}") from None


def _remember(store_dir: Path, name: str, key: bytes) -> None:
    names = registry(store_dir)
    if names.get(name) != key.hex():
        names[name] = key.hex()
        tmp = store_dir / (REGISTRY + ".tmp")
        tmp.write_text(json.dumps(names, indent=1, sort_keys=True))
        os.replace(tmp, store_dir / REGISTRY)


async def local_drive(store: Any, store_dir: Path, name: str) -> Drive:
    """The store's drive called `name`, made if new, and remembered under that name."""
    if name not in registry(store_dir):
        check_new_name(name)
    try:
        drive = await Drive.create(store, name=name)
    except NotWritableError:
        if not store.read_only:
            raise
        raise UnknownDriveError(
            f"no drive called {name!r} in {store_dir} yet, and another process holds the store, so none can be made now"
            " (`hyperfs keys` lists the drives it has)"
        ) from None
    _remember(store_dir, name, drive.key)
    return drive


def check_new_name(name: str) -> None:
    """InvalidArgumentError for a name no later command could find again: an empty one, one
    with a control character (`keys` lists a drive a line each, its fields split by tabs), or
    one that reads as a drive's key (the name would hide that drive)."""
    if not name.strip():
        raise InvalidArgumentError("a drive name cannot be empty or only spaces")
    if any(ch < " " or ch == "\x7f" for ch in name):
        raise InvalidArgumentError(f"a drive name cannot hold a tab, newline or other control character: {name!r}")
    try:
        decode_key(name)
    except InvalidKeyError:
        return
    raise InvalidArgumentError(f"{name!r} reads as a drive's key or id, so it cannot be a name")


def _looks_like_key(text: str) -> bool:
    """Whether the user meant `text` as a key or id rather than a name (so a typo in one is
    reported as a bad key, not as an unknown name)."""
    return "://" in text or len(text) in (52, 64)


async def open_named_drive(store: Any, store_dir: Path, text: str, create: bool = False) -> Drive:
    """The drive `text` names: a local name, else a z32 id, hex key or hyper:// URL; with
    `create`, a name that is neither becomes a new local drive."""
    if text == DEFAULT_DRIVE or text in registry(store_dir):
        return await local_drive(store, store_dir, text)
    try:
        key = decode_key(text)
    except InvalidKeyError:
        if _looks_like_key(text):
            raise
        if create:
            return await local_drive(store, store_dir, text)
        raise UnknownDriveError(f"no drive called {text!r} in {store_dir}, and it is not a key (`hyperfs keys` lists them)") from None
    try:
        return await Drive.open(store, key)
    except FileNotFoundInDrive as err:  # no peer to fetch it from: say where one comes in
        raise FileNotFoundInDrive(f"{err}; `clone {text} --peer HOST:PORT` fetches it, and `mount` with --peer reads it") from None


# --- peers --------------------------------------------------------------------------------------


@asynccontextmanager
async def nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose lone HyperfsError (one line for the user) or Ctrl-C (exit status 130, no
    traceback) comes out as itself, not in a group."""
    try:
        async with trio.open_nursery() as n:
            yield n
    except BaseExceptionGroup as group:
        err = sole_error(group)
        if isinstance(err, (HyperfsError, KeyboardInterrupt)):
            raise err from None
        raise


def sole_error(err: BaseException) -> BaseException:
    """The one exception inside `err`'s (nested) exception groups, else `err` itself."""
    leaves = _leaves(err) if isinstance(err, BaseExceptionGroup) else [err]
    return leaves[0] if len(leaves) == 1 else err


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for err in group.exceptions:
        out.extend(_leaves(err) if isinstance(err, BaseExceptionGroup) else [err])
    return out


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 hosts in brackets) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgumentError(f"not a HOST:PORT address: {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def say_on_stderr(text: str) -> None:
    """What a command tells the user while it works, on stderr (stdout is its result)."""
    print(f"hyperfs: {text}", file=sys.stderr, flush=True)


@asynccontextmanager
async def awaiting_peers(
    drive: str, peers: Sequence[str], say: Callable[[str], None] = say_on_stderr
) -> AsyncIterator[None]:
    """Runs the body (opening `drive`, as the user named it, from `peers`); `say`s once what it
    waits for if that takes over PEER_WAIT_NOTICE seconds. Else a wrong key, or a peer without
    the drive, looks like a hang: peers do not answer for drives they do not have."""

    async def notice() -> None:
        await trio.sleep(PEER_WAIT_NOTICE)
        say(
            f"still waiting for {' or '.join(peers)} to send {drive} (peers do not answer for a drive "
            "they lack: is the key right, and is the drive shared there?)"
        )

    async with trio.open_nursery() as tasks:
        tasks.start_soon(notice)
        yield
        tasks.cancel_scope.cancel()


async def dial_peers(store: Any, addresses: Sequence[str], offline: Callable[[str], None] | None = None) -> None:
    """Replicate the store with the peers at `addresses` (Noise initiator), all at once, until
    cancelled: a drive's blocks come from whichever has them, and one peer going leaves the
    others. A dropped or refused connection is retried every REDIAL_DELAY seconds (a clone
    resumes where it stopped).

    Peers that cannot be reached before a first connection are an error once none can be (one
    that answers is enough), unless the caller can work from what the store holds meanwhile:
    then it is told of each such peer through `offline`, once."""
    # Each address once (a repeat would never count as failed), and a typo fails before any dial.
    places = [(address, *parse_address(address)) for address in dict.fromkeys(addresses)]
    failed: dict[str, BaseException] = {}  # peers whose last try, before a first connection, failed
    told: set[str] = set()

    def unreachable(address: str, err: BaseException) -> None:
        failed[address] = err
        if offline is not None:
            if address not in told:
                told.add(address)
                offline(f"cannot reach {address} yet ({err}); showing what this store holds, and trying again")
        elif len(failed) == len(places):
            reasons = "; ".join(f"{where}: {failed[where]}" for where, _, _ in places)
            raise PeerUnreachableError(f"cannot replicate with {reasons}")

    async def dial(address: str, host: str, port: int) -> None:
        connected = False
        while True:
            try:
                stream = await trio.open_tcp_stream(host, port)
                failed.pop(address, None)
                conn = await store.replicate(stream, True)
                connected = True
                if conn.error:
                    say_on_stderr(f"peer {address} dropped: {conn.error}")
            except (OSError, HyperfsError) as err:
                if not connected:
                    unreachable(address, err)
            await trio.sleep(REDIAL_DELAY)

    async with trio.open_nursery() as tasks:
        for place in places:
            tasks.start_soon(dial, *place)


async def holds_drive(store: Any, store_dir: Path, text: str) -> bool:
    """Whether the store holds drive `text` (a local name, or a key as the user wrote it)."""
    hex_key = registry(store_dir).get(text)
    try:
        key = bytes.fromhex(hex_key) if hex_key else decode_key(text)
    except InvalidKeyError:
        return False
    return key in await store.list()
