"""Benchmark `hyperfs.core.Hypercore` against JS Hypercore 11 (the anchor) in the same run.

For each workload it runs /work/shared/anchors/core11/bench.js (copied to .cache/core11 and
`npm install`ed there on first use) and the same loop on our core, and prints ours, JS's and
the ratio for appends and sequential gets. Usage: `python scripts/bench_core.py [--scale F]
[--profile WORKLOAD]` (F scales the bytes per workload; --profile prints a cProfile of ours).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from anchors import ensure_anchor
from hyperfs.core import Hypercore

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = ROOT / ".cache" / "core11"

# name, block size, total bytes, batch
WORKLOADS = [
    ("64KiB x16", 65536, 128 << 20, 16),
    ("4KiB x1", 4096, 8 << 20, 1),
    ("4KiB x64", 4096, 64 << 20, 64),
]


def run_js(block_size: int, total: int, batch: int) -> dict[str, dict[str, str]]:
    out = subprocess.run(
        ["node", "bench.js", str(block_size), str(total), str(batch)],
        cwd=ANCHOR, check=True, capture_output=True, text=True,
    ).stdout
    return {line["op"]: line for line in map(json.loads, out.splitlines())}


async def run_ours(block_size: int, total: int, batch: int) -> dict[str, dict[str, float]]:
    """The loop of bench.js on our core: appends of `batch` blocks, then get(i) for every i."""
    with tempfile.TemporaryDirectory(prefix="pycore-") as folder:
        core = Hypercore(folder)
        await core.ready()
        n = total // block_size
        buf = bytes([7]) * block_size
        t = time.perf_counter()
        for i in range(0, n, batch):
            blocks = [(i + j).to_bytes(4, "little") + buf[4:] for j in range(min(batch, n - i))]
            await core.append(blocks)
        dt = time.perf_counter() - t
        append = {"MBps": n * block_size / 1e6 / dt, "blocksps": n / dt}
        t = time.perf_counter()
        for i in range(n):
            await core.get(i)
        dt = time.perf_counter() - t
        get = {"MBps": n * block_size / 1e6 / dt, "blocksps": n / dt}
        await core.close()
    return {"append": append, "get-seq": get}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the bytes of each workload")
    parser.add_argument("--profile", choices=[w[0] for w in WORKLOADS], help="cProfile our side of one workload")
    parser.add_argument("--no-js", action="store_true", help="only our figures")
    args = parser.parse_args()
    if not args.no_js:
        ensure_anchor("core11", "hypercore")
    print(f"{'workload':<22}{'ours':>14}{'JS':>14}{'ratio':>8}")
    for name, block_size, total, batch in WORKLOADS:
        if args.profile and args.profile != name:
            continue
        total = int(total * args.scale)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
        ours = trio.run(run_ours, block_size, total, batch)
        if args.profile:
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
        js = None if args.no_js else run_js(block_size, total, batch)
        for op in ("append", "get-seq"):
            unit = "MBps" if block_size >= 65536 else "blocksps"
            mine = ours[op][unit]
            theirs = float(js[op][unit]) if js else float("nan")
            label = f"{op} {name}"
            print(f"{label:<22}{mine:>10.1f} {unit[:-2]+'/s':<3}{theirs:>10.1f}   {mine / theirs:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
