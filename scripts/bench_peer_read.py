"""Reading a peer's drive through a mount, over a link with a round trip (`delay_proxy.py`).

    .venv/bin/python scripts/bench_peer_read.py [--mib 128] [--files 8000] [--rtt-ms 20] [--reads 100]

A `hyperfs share` of a drive, seen through a proxy that adds the round trip; a second store
mounts it with `--peer` (fetching only what is read).
Measured, each against JS Hypercore 11 (`shared/interop`) over the same proxy in the same run:

- reading one file front to back (`cat`), against a JS reader downloading a core of as many
  64 KiB blocks (`peer.js clone`, timed from process start to exit, as `bench_replicate.py`);
- 4 KiB reads at random places of the other, against a JS reader doing `core.seek(bytes)`
  then `core.get(index)` at random places of a core of 64 KiB blocks (node start-up not
  counted);
- mounting a drive of `--files` small files, which fetches its metadata log (one small block
  a file), from process start to a usable folder, against a JS reader downloading a core of
  as many small blocks (`peer.js clone`, node start-up counted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_replicate import _require_peer_or_exit, js_read  # noqa: E402
from tests.interop import INTEROP_DIR, js_peer  # noqa: E402

BLOCK = 65536
HYPERFS = [sys.executable, "-m", "hyperfs"]

JS_RANDOM_READER = r"""
const b4a = require('b4a')
const Corestore = require('corestore')
const net = require('net')
async function main () {
  const [storage, key, port, reads, seed] = process.argv.slice(1)  // node -e: no script path
  const store = new Corestore(storage)
  const core = store.get({ key: b4a.from(key, 'hex') })
  await core.ready()
  const sock = net.connect(Number(port), '127.0.0.1')
  sock.pipe(store.replicate(true)).pipe(sock)
  await core.update({ wait: true })
  let x = Number(seed)
  const started = process.hrtime.bigint()
  for (let n = 0; n < Number(reads); n++) {
    x = (x * 48271) % 2147483647  // MINSTD: exact in doubles
    const [index] = await core.seek(x % (core.byteLength - 4096))
    await core.get(index)
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  console.log(JSON.stringify({ seconds }))
  sock.destroy()
  await store.close()
}
main().catch((e) => { console.error(e); process.exit(1) })
"""


@contextlib.contextmanager
def background(command: list[str], first_line: str = "") -> Iterator[str]:
    """Run `command`, yield its first stdout line starting with `first_line`, stop it after."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = next(line for line in proc.stdout if line.startswith(first_line))
        yield line.strip()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def delayed(port: int, rtt_ms: float) -> contextlib.AbstractContextManager[str]:
    """A delay proxy in front of 127.0.0.1:port; yields the port it listens on."""
    return background(
        [sys.executable, str(ROOT / "scripts" / "delay_proxy.py"), "--to", f"127.0.0.1:{port}", "--rtt-ms", str(rtt_ms)]
    )


@contextlib.contextmanager
def peer_mount(store: Path, mnt: Path, key: str, address: str) -> Iterator[Path]:
    mnt.mkdir()
    subprocess.run([*HYPERFS, "--store", str(store), "mount", str(mnt), key, "--peer", address],
                   check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    try:
        yield mnt
    finally:
        if subprocess.run([*HYPERFS, "--store", str(store), "unmount", str(mnt)], check=False, cwd=ROOT).returncode:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)


def read_through(path: Path, expected: bytes) -> float:
    """Seconds to read `path` front to back in 1 MiB reads (checked against `expected`)."""
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        data = b"".join(iter(lambda: f.read(1 << 20), b""))
    elapsed = time.perf_counter() - started
    if data != expected:
        raise RuntimeError(f"{path} read back wrong")
    return elapsed


def random_reads(path: Path, expected: bytes, reads: int) -> float:
    """Seconds per 4 KiB read at random places of `path` (checked against `expected`)."""
    rng = random.Random(11)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # the pages asked for, no read-ahead
        started = time.perf_counter()
        for _ in range(reads):
            at = rng.randrange(len(expected) - 4096)
            if os.pread(fd, 4096, at) != expected[at : at + 4096]:
                raise RuntimeError(f"{path} read back wrong at {at}")
        return (time.perf_counter() - started) / reads
    finally:
        os.close(fd)


def js_random_reads(storage: str, key: str, port: int, reads: int) -> float:
    """Seconds per JS `seek` + `get` at a random place, of a core read from 127.0.0.1:port."""
    result = subprocess.run(
        ["node", "-e", JS_RANDOM_READER, storage, key, str(port), str(reads), "7"],
        capture_output=True, text=True, check=False, env={**os.environ, "NODE_PATH": str(INTEROP_DIR / "node_modules")},
    )
    if result.returncode != 0:
        raise RuntimeError(f"JS random reader failed: {result.stderr.strip()[:600]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["seconds"] / reads


@contextlib.contextmanager
def shared(writer: list[str], drive: str, rtt_ms: float) -> Iterator[str]:
    """`hyperfs share` of `drive` behind a delay proxy; yields the proxy's address."""
    with background([*writer, "share", drive, "--no-mdns"], "listening on") as line, \
            delayed(int(line.rsplit(":", 1)[1]), rtt_ms) as proxy:
        yield f"127.0.0.1:{proxy}"


def imported(writer: list[str], src: Path, name: str) -> str:
    """Import folder `src` into a new drive `name` of the writer's store; its key."""
    created = subprocess.run([*writer, "create", name], check=True, capture_output=True, text=True, cwd=ROOT)
    subprocess.run([*writer, "import", str(src), name, "--quiet"], check=True, capture_output=True, cwd=ROOT)
    return created.stdout.split()[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--files", type=int, default=8000)
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--reads", type=int, default=100)
    args = parser.parse_args()
    _require_peer_or_exit()
    blocks = args.mib * 1024 * 1024 // BLOCK
    mb = blocks * BLOCK / 1e6
    files = {"seq.bin": os.urandom(blocks * BLOCK), "random.bin": os.urandom(blocks * BLOCK)}
    with tempfile.TemporaryDirectory(prefix="bench-peer-read-") as tmp:
        work = Path(tmp)
        big, many = work / "big", work / "many"
        big.mkdir()
        many.mkdir()
        for name, data in files.items():
            (big / name).write_bytes(data)
        for i in range(args.files):
            (many / f"{i:05}.txt").write_text(f"file {i}\n")
        writer = [*HYPERFS, "--store", str(work / "writer")]
        big_key, many_key = imported(writer, big, "big"), imported(writer, many, "many")
        with shared(writer, "big", args.rtt_ms) as address:
            with peer_mount(work / "reader", work / "mnt", big_key, address) as mnt:
                ours_seq = mb / read_through(mnt / "seq.bin", files["seq.bin"])
                ours_random = random_reads(mnt / "random.bin", files["random.bin"], args.reads)
        with shared(writer, "many", args.rtt_ms) as address:
            started = time.perf_counter()
            with peer_mount(work / "reader", work / "mnt-many", many_key, address) as mnt:
                ours_mount = time.perf_counter() - started
                if len(os.listdir(mnt)) != args.files:
                    raise RuntimeError("the peer mount lists the wrong files")
        with js_peer("seed", "--storage", str(work / "js-writer"), "--blocks", str(blocks),
                     "--block-size", str(BLOCK), "--listen", "0", timeout=600) as (_, js), \
                delayed(js["port"], args.rtt_ms) as proxy:
            js_seq = mb / js_read(str(work / "js-reader"), js["key"], int(proxy), blocks)[0]
            js_random = js_random_reads(str(work / "js-random-reader"), js["key"], int(proxy), args.reads)
        with js_peer("seed", "--storage", str(work / "js-small"), "--blocks", str(args.files + 1),
                     "--listen", "0", timeout=600) as (_, js), delayed(js["port"], args.rtt_ms) as proxy:
            js_small = js_read(str(work / "js-small-reader"), js["key"], int(proxy), args.files + 1)[0]
    print(f"a peer's drive over a {args.rtt_ms:g} ms round trip (127.0.0.1 through delay_proxy.py)")
    print(f"  {mb:.0f} MB file front to back: hyperfs mount {ours_seq:7.1f} MB/s, "
          f"JS Hypercore 11 download {js_seq:7.1f} MB/s, ratio {ours_seq / js_seq:5.2f}x")
    print(f"  4 KiB random reads of it:   hyperfs mount {ours_random * 1000:7.1f} ms,   "
          f"JS seek + get {js_random * 1000:7.1f} ms, ratio {js_random / ours_random:5.2f}x (faster is more)")
    print(f"  mount of {args.files} files (its metadata log): hyperfs {ours_mount:5.2f} s, "
          f"JS download of {args.files + 1} small blocks {js_small:5.2f} s, ratio {js_small / ours_mount:5.2f}x")


if __name__ == "__main__":
    main()
