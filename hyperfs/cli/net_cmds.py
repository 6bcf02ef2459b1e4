"""The network commands: share a drive, clone one from a peer, seed one (keep it and serve it on).

Peers speak the Hypercore 11 wire protocol over TCP (a JavaScript peer can be on either side).
Nothing listens unless asked (`--listen HOST:PORT`, loopback by default), and only there.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from tqdm import tqdm

from hyperfs.cli.common import (
    add_drive_argument,
    awaiting_peers,
    command_adder,
    dial_peers,
    follow_writer,
    nursery,
    open_named_drive,
    parse_address,
)
from hyperfs.core.crypto import discovery_key
from hyperfs.core.protocol.replicator import Replicator, store_replicator
from hyperfs.core.z32 import decode_key, encode_id
from hyperfs.drive.drive import Drive
from hyperfs.errors import HyperfsError, PeerUnreachableError

DEFAULT_LISTEN = "127.0.0.1:0"
PEERS_HELP = (
    "a peer to fetch it from (repeat for several: each block comes from one that has it); "
    "default: one sharing it on the LAN (mDNS)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    add = command_adder(subparsers)
    # A share only reads the store, and never holds it: a mount started after it writes the
    # drive, and the share follows.
    p = add("share", cmd_share, "serve a drive's two cores to peers (stays in the foreground)", reads=True, holds=False)
    add_drive_argument(p, optional=True)
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT", help=f"default {DEFAULT_LISTEN}")
    p.add_argument("--no-mdns", dest="mdns", action="store_false", help="do not announce it on the LAN")
    p = add("clone", cmd_clone, "copy a drive from a peer into the local store (resumable, verified)")
    p.add_argument("key", help="the drive's z-base-32 id, hex key or hyper:// URL")
    p.add_argument("--peer", metavar="HOST:PORT", action="append", help=PEERS_HELP)
    p.add_argument("--sparse", action="store_true", help="fetch only the index now; files as they are read")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = add("seed", cmd_seed, "keep a full verified copy of a drive, following its updates, and serve it on")
    p.add_argument("key", help="the drive's z-base-32 id, hex key or hyper:// URL")
    p.add_argument("--peer", metavar="HOST:PORT", action="append", help=PEERS_HELP)
    p.add_argument("--listen", default=None, metavar="HOST:PORT", help="also serve it here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


async def listen(store: Any, address: str, on_ready: Callable[[str, int], Awaitable[None]]) -> None:
    """Replicate the store with every peer connecting to `address` (Noise responder) until cancelled."""
    host, port = parse_address(address)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_host, bound_port = listeners[0].socket.getsockname()[:2]
    await on_ready(bound_host, bound_port)

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


async def cmd_share(store: Any, args: argparse.Namespace) -> int:
    drive = await open_named_drive(store, args.store, args.drive)
    replicator = await store_replicator(store)  # the drive's two cores are open: both are shared
    async with nursery() as tasks:
        # Whatever process writes the store (a mount, say), what it writes reaches the peers.
        tasks.start_soon(follow_writer, store)

        async def ready(host: str, port: int) -> None:
            print(f"sharing hyper://{encode_id(drive.key)}  (key {drive.key.hex()})", flush=True)
            print(f"listening on {host}:{port}", flush=True)
            if args.mdns:
                tasks.start_soon(mdns_announce, drive.discovery_key, host, port)

        tasks.start_soon(listen, store, args.listen, ready)
        tasks.start_soon(_status, replicator)
    return 0


async def _clone(store: Any, args: argparse.Namespace, peers: list[str]) -> Drive:
    """Open the drive `args.key` from `peers` and, unless sparse, download both of its cores."""
    replicator = await store_replicator(store)  # before opening: the index block is awaited
    key = decode_key(args.key)
    async with awaiting_peers(args.key, peers):
        drive = await Drive.open(store, key)
    if not getattr(args, "sparse", False):  # seed has no --sparse
        for name, core in (("metadata", drive.metadata), ("content", drive.content)):
            with tqdm(desc=name, unit="block", disable=args.quiet, file=sys.stderr) as bar:

                def progress(done: int, total: int, bar: tqdm = bar) -> None:
                    bar.total = total
                    bar.n = done
                    bar.refresh()

                await replicator.download(core, 0, None, progress)
    return drive


async def _peers(args: argparse.Namespace) -> list[str]:
    """The --peer addresses, else the first LAN peer sharing the drive."""
    if args.peer:
        return list(args.peer)
    return [await lan_peer(decode_key(args.key))]


async def lan_peer(key: bytes) -> str:
    """HOST:PORT of the first LAN peer announcing drive `key`'s discovery key (PeerUnreachableError
    after MDNS_TIMEOUT)."""
    return await mdns_find(discovery_key(key), MDNS_TIMEOUT)


async def cmd_clone(store: Any, args: argparse.Namespace) -> int:
    peers = await _peers(args)
    async with nursery() as tasks:
        tasks.start_soon(dial_peers, store, peers)
        drive = await _clone(store, args, peers)
        print(
            f"cloned hyper://{encode_id(drive.key)}: version {drive.version}, "
            f"{drive.metadata.length} metadata and {drive.content.length} content blocks"
            + (" (sparse)" if args.sparse else ""),
            flush=True,
        )
        tasks.cancel_scope.cancel()
    return 0


async def cmd_seed(store: Any, args: argparse.Namespace) -> int:
    peers = await _peers(args)
    async with nursery() as tasks:
        tasks.start_soon(dial_peers, store, peers)
        drive = await _clone(store, args, peers)
        print(f"seeding hyper://{encode_id(drive.key)} (version {drive.version})", flush=True)
        if args.listen:

            async def ready(host: str, port: int) -> None:
                print(f"serving on {host}:{port}", flush=True)

            tasks.start_soon(listen, store, args.listen, ready)
        replicator = await store_replicator(store)
        for core in (drive.metadata, drive.content):
            tasks.start_soon(_follow, replicator, core)
    return 0


async def _follow(replicator: Replicator, core: Any) -> None:
    """Download every block the core gains, as it gains them."""
    while True:
        have = core.length
        await replicator.download(core, 0, have)
        if core.length == have:
            await core.wait_append()

# --- LAN discovery (mDNS) ---------------------------------------------------------------------------

MDNS_TYPE = "_hyperfs._tcp.local."
MDNS_TIMEOUT = 10.0  # seconds a clone looks for a LAN peer before giving up


def _zeroconf(host: str) -> Any:
    from zeroconf import InterfaceChoice, IPVersion, Zeroconf

    # mDNS only where we listen: loopback stays loopback, one address stays that interface.
    interfaces = InterfaceChoice.All if host in ("", "0.0.0.0") else [host]
    return Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)


def _lan_addresses() -> list[str]:
    import ifaddr

    return [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)]


async def mdns_announce(dkey: bytes, host: str, port: int) -> None:
    """Announce host:port for `dkey` on mDNS until cancelled: the discovery key only, never the key."""
    try:
        from zeroconf import ServiceInfo
    except ImportError:
        print("hyperfs: not announcing on the LAN: the zeroconf package is not installed", file=sys.stderr)
        return

    zc = await trio.to_thread.run_sync(_zeroconf, host)
    addresses = [socket.inet_aton(a) for a in (_lan_addresses() if host in ("", "0.0.0.0") else [host])]
    info = ServiceInfo(
        MDNS_TYPE, f"hyperfs-{os.urandom(6).hex()}.{MDNS_TYPE}", addresses=addresses, port=port,
        properties={"dk": dkey.hex()},
    )
    try:
        await trio.to_thread.run_sync(zc.register_service, info)
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(lambda: (zc.unregister_service(info), zc.close()))


async def mdns_find(dkey: bytes, timeout: float) -> str:
    """HOST:PORT of the first LAN peer announcing `dkey` (PeerUnreachableError after `timeout`)."""
    try:
        from zeroconf import ServiceBrowser, ServiceStateChange
    except ImportError:
        raise PeerUnreachableError("no --peer given, and LAN discovery needs the zeroconf package") from None

    token = trio.lowlevel.current_trio_token()
    send, receive = trio.open_memory_channel[str](math.inf)
    zc = await trio.to_thread.run_sync(_zeroconf, "")

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        # zeroconf's thread: resolve the service, hand a match to trio.
        if state_change is not ServiceStateChange.Added:
            return
        info = zeroconf.get_service_info(service_type, name, 3000)
        if info is None or info.properties.get(b"dk") != dkey.hex().encode():
            return
        for address in info.parsed_addresses():
            trio.from_thread.run_sync(send.send_nowait, f"{address}:{info.port}", trio_token=token)

    browser = ServiceBrowser(zc, MDNS_TYPE, handlers=[on_change])
    try:
        with trio.move_on_after(timeout):
            return await receive.receive()
        raise PeerUnreachableError(f"no peer on the LAN shares {dkey.hex()[:16]}... (give one with --peer)")
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(lambda: (browser.cancel(), zc.close()))
