"""The network commands: share a drive, clone one from a peer, seed one (keep it and serve it on).

Peers speak the Hypercore 11 wire protocol over TCP (a JavaScript peer can be on either side).
Nothing listens unless asked (`--listen HOST:PORT`, loopback by default), and only there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from tqdm import tqdm

from hyperfs.cli.drive_cmds import _open, _run
from hyperfs.core.protocol.replicator import Replicator, store_replicator
from hyperfs.core.z32 import decode_key, encode_id
from hyperfs.drive.drive import Drive
from hyperfs.errors import HyperfsError, InvalidArgumentError, PeerUnreachableError

DEFAULT_LISTEN = "127.0.0.1:0"
REDIAL_DELAY = 1.0  # seconds between attempts to reach a peer that dropped


def register(subparsers: argparse._SubParsersAction) -> None:
    def add(name: str, func: Callable[..., Awaitable[int]], help: str) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help, description=help)
        parser.set_defaults(func=lambda args: trio.run(_run, func, args))
        return parser

    p = add("share", cmd_share, "serve a drive's two cores to peers (stays in the foreground)")
    p.add_argument("drive", nargs="?", default="default")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT", help=f"default {DEFAULT_LISTEN}")
    p = add("clone", cmd_clone, "copy a drive from a peer into the local store (resumable, verified)")
    p.add_argument("key")
    p.add_argument("--peer", required=True, metavar="HOST:PORT")
    p.add_argument("--sparse", action="store_true", help="fetch only the index now; files as they are read")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = add("seed", cmd_seed, "keep a full verified copy of a drive, following its updates, and serve it on")
    p.add_argument("key")
    p.add_argument("--peer", required=True, metavar="HOST:PORT")
    p.add_argument("--listen", default=None, metavar="HOST:PORT", help="also serve it here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@asynccontextmanager
async def _nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose lone HyperfsError comes out as itself (one line for the user, no group)."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], HyperfsError):
            raise leaves[0] from None
        raise


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


async def dial(store: Any, address: str, *, forever: bool = False) -> None:
    """Connect to a peer as Noise initiator and replicate the store until the connection ends.

    A first connection that fails is an error. Later, with `forever`, a dropped or refused
    connection is retried every REDIAL_DELAY seconds (a clone resumes where it stopped).
    """
    host, port = parse_address(address)
    connected = False
    while True:
        try:
            conn = await store.replicate(await trio.open_tcp_stream(host, port), True)
            connected = True
            if conn.error:
                print(f"hyperfs: peer {address} dropped: {conn.error}", file=sys.stderr)
        except (OSError, HyperfsError) as err:
            if not connected:
                raise PeerUnreachableError(f"cannot replicate with {address}: {err}") from None
        if not forever:
            return
        await trio.sleep(REDIAL_DELAY)


async def listen(store: Any, address: str, on_ready: Callable[[str], None]) -> None:
    """Replicate the store with every peer connecting to `address` (Noise responder) until cancelled."""
    host, port = parse_address(address)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_host, bound_port = listeners[0].socket.getsockname()[:2]
    on_ready(f"{bound_host}:{bound_port}")

    async def handle(stream: trio.SocketStream) -> None:
        try:
            conn = await store.replicate(stream, False)
        except HyperfsError as err:
            print(f"\nhyperfs: a peer failed the handshake: {err}", file=sys.stderr)
            return
        if conn.error:
            print(f"\nhyperfs: dropped a peer: {conn.error}", file=sys.stderr)

    await trio.serve_listeners(handle, listeners)


async def _status(replicator: Replicator) -> None:
    """One refreshing stderr line: connected peers and bytes sent."""
    while True:
        peers = len(replicator.connections)
        print(f"\r{peers} peer(s), {replicator.bytes_sent / 1e6:.1f} MB sent   ", end="", file=sys.stderr, flush=True)
        await trio.sleep(1.0)


def _announce(drive: Drive) -> Callable[[str], None]:
    def ready(address: str) -> None:
        print(f"sharing hyper://{encode_id(drive.key)}  (key {drive.key.hex()})", flush=True)
        print(f"listening on {address}", flush=True)

    return ready


async def cmd_share(store: Any, args: argparse.Namespace) -> int:
    drive = await _open(store, args.store, args.drive)
    replicator = await store_replicator(store)  # the drive's two cores are open: both are shared
    async with _nursery() as nursery:
        nursery.start_soon(listen, store, args.listen, _announce(drive))
        nursery.start_soon(_status, replicator)
    return 0


async def _clone(store: Any, args: argparse.Namespace) -> Drive:
    """Open the drive `args.key` from peers and, unless sparse, download both of its cores."""
    replicator = await store_replicator(store)  # before opening: the index block is awaited
    drive = await Drive.open(store, decode_key(args.key))
    if not getattr(args, "sparse", False):
        for name, core in (("metadata", drive.metadata), ("content", drive.content)):
            with tqdm(desc=name, unit="block", disable=args.quiet, file=sys.stderr) as bar:

                def progress(done: int, total: int, bar: tqdm = bar) -> None:
                    bar.total = total
                    bar.n = done
                    bar.refresh()

                await replicator.download(core, 0, None, progress)
    return drive


async def cmd_clone(store: Any, args: argparse.Namespace) -> int:
    async with _nursery() as nursery:
        nursery.start_soon(lambda: dial(store, args.peer, forever=True))
        drive = await _clone(store, args)
        print(
            f"cloned hyper://{encode_id(drive.key)}: version {drive.version}, "
            f"{drive.metadata.length} metadata and {drive.content.length} content blocks"
            + (" (sparse)" if args.sparse else ""),
            flush=True,
        )
        nursery.cancel_scope.cancel()
    return 0


async def cmd_seed(store: Any, args: argparse.Namespace) -> int:
    async with _nursery() as nursery:
        nursery.start_soon(lambda: dial(store, args.peer, forever=True))
        drive = await _clone(store, args)
        print(f"seeding hyper://{encode_id(drive.key)} (version {drive.version})", flush=True)
        if args.listen:
            nursery.start_soon(listen, store, args.listen, lambda a: print(f"serving on {a}", flush=True))
        replicator = await store_replicator(store)
        for core in (drive.metadata, drive.content):
            nursery.start_soon(_follow, replicator, core)
    return 0


async def _follow(replicator: Replicator, core: Any) -> None:
    """Download every block the core gains, as it gains them."""
    while True:
        have = core.length
        await replicator.download(core, 0, have)
        if core.length == have:
            await core.wait_append()
