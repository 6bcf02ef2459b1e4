"""Replication throughput over loopback TCP: hyperfs->hyperfs, hyperfs->JS, JS->hyperfs, JS->JS.

    .venv/bin/python scripts/bench_replicate.py [--mib 256] [--block-size 65536]

Every writer is its own process (as the JS ones are), filled before timing starts. A hyperfs
reader is timed from dialing to the last block stored and verified; a JS reader (`peer.js clone`)
from process start to its exit, node start-up included; the anchor JS->JS is measured the same
way in the same run. Prints one line per pair: MB/s, the reader's CPU seconds (threads
included) and the ratio to JS->JS. On a busy machine the CPU figures are the steadier ones.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hyperfs.core.hypercore import Hypercore  # noqa: E402
from hyperfs.core.protocol.replicator import Replicator  # noqa: E402
from hyperfs.core.protocol.secret_stream import SecretStream  # noqa: E402
from tests.interop import PEER_JS, interop_block, js_peer, require_peer  # noqa: E402


def serve(storage: str, blocks: int, size: int) -> None:
    """The hyperfs writer process: fill a core, print {key, port}, serve until killed."""

    async def main() -> None:
        core = Hypercore(storage)
        await core.ready()
        batch = 64
        for start in range(core.length, blocks, batch):
            await core.append([interop_block(i, size) for i in range(start, min(blocks, start + batch))])
        replicator = Replicator()
        replicator.add(core)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        print(json.dumps({"key": core.key.hex(), "port": listeners[0].socket.getsockname()[1]}), flush=True)

        async def handle(stream: trio.SocketStream) -> None:
            await replicator.replicate(await SecretStream.connect(stream, False))

        await trio.serve_listeners(handle, listeners)

    trio.run(main)


def hyperfs_read(storage: str, key: str, port: int, blocks: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for a hyperfs reader to download every block from 127.0.0.1:port."""

    async def main() -> tuple[float, float]:
        core = Hypercore(storage, key=bytes.fromhex(key))
        await core.ready()
        replicator = Replicator()
        replicator.add(core)
        async with trio.open_nursery() as nursery:
            started = time.perf_counter()
            cpu = time.process_time()

            async def dial() -> None:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await replicator.replicate(await SecretStream.connect(stream, True))

            nursery.start_soon(dial)
            await core.download(0, blocks)
            elapsed = time.perf_counter() - started, time.process_time() - cpu
            nursery.cancel_scope.cancel()
        await core.close()
        return elapsed

    return trio.run(main)


def js_read(storage: str, key: str, port: int, blocks: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for `peer.js clone` to download every block (process start to exit)."""
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        ["node", str(PEER_JS), "clone", "--storage", storage, "--key", key, "--connect", f"127.0.0.1:{port}",
         "--length", str(blocks), "--timeout", "600000", "--quiet"],
        capture_output=True, text=True, check=False,
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"JS clone failed: {result.stderr.strip()[-500:]}")
    return elapsed, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--block-size", type=int, default=65536)
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: run the hyperfs writer
    args = parser.parse_args()
    blocks = args.mib * 1024 * 1024 // args.block_size
    if args.serve:
        serve(args.serve, blocks, args.block_size)
        return
    _require_peer_or_exit()
    total_mb = blocks * args.block_size / 1e6
    with tempfile.TemporaryDirectory(prefix="bench-replicate-") as tmp:
        writer = subprocess.Popen(
            [sys.executable, __file__, "--mib", str(args.mib), "--block-size", str(args.block_size),
             "--serve", f"{tmp}/py-writer"],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert writer.stdout is not None
            py = json.loads(writer.stdout.readline())
            with js_peer("seed", "--storage", f"{tmp}/js-writer", "--blocks", str(blocks),
                         "--block-size", str(args.block_size), "--listen", "0", timeout=600) as (_, js):
                figures = {
                    "hyperfs->hyperfs": hyperfs_read(f"{tmp}/r1", py["key"], py["port"], blocks),
                    "hyperfs->JS": js_read(f"{tmp}/r2", py["key"], py["port"], blocks),
                    "JS->hyperfs": hyperfs_read(f"{tmp}/r3", js["key"], js["port"], blocks),
                    "JS->JS (anchor)": js_read(f"{tmp}/r4", js["key"], js["port"], blocks),
                }
        finally:
            writer.terminate()
            writer.wait()
    anchor = total_mb / figures["JS->JS (anchor)"][0]
    print(f"replicate {total_mb:.0f} MB in {args.block_size // 1024} KiB blocks over loopback")
    for name, (seconds, cpu) in figures.items():
        rate = total_mb / seconds
        print(
            f"  {name:18} {rate:8.1f} MB/s  ({seconds:6.2f} s, reader CPU {cpu:5.2f} s)"
            f"  ratio to JS->JS {rate / anchor:5.2f}x"
        )


def _require_peer_or_exit() -> None:
    try:
        require_peer()
    except BaseException as err:  # pytest.skip raises its own exception type
        sys.exit(f"cannot run: {err}")


if __name__ == "__main__":
    main()
