"""A hyperfs drive shared with `hyperfs share`, relayed by the JS peer, cloned with `hyperfs clone`.

Real processes end to end: the `hyperfs` command (share, clone, export, info), the JS `mirror`
carrying both of the drive's cores, and a second store that never talks to the first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import zeroconf

from hyperfs.core.corestore import Corestore
from hyperfs.core.crypto import discovery_key
from hyperfs.drive.drive import Drive
from tests.interop import js_peer, require_peer
from tests.mounting import mounted
from tests.test_replicator import run

pytestmark = pytest.mark.timeout(180)

FILES = {
    "/readme.txt": b"hello from hyperfs\n",
    "/data/big.bin": os.urandom(3 * 1024 * 1024 + 17),
    "/data/empty": b"",
    "/deep/a/b/c.txt": b"c" * 1000,
}


def hyperfs(store: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "hyperfs", "--store", str(store), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"hyperfs {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result


def make_drive(store: Path) -> tuple[bytes, bytes]:
    """A drive called `shared` with FILES in `store`; returns (metadata key, content key)."""

    async def body() -> tuple[bytes, bytes]:
        async with Corestore(str(store)) as cs:
            drive = await Drive.create(cs, name="shared")
            for path, data in FILES.items():
                await drive.write_file(path, data)
            keys = drive.key, drive.content.key
            await drive.close()
            return keys

    keys = run(body)
    hyperfs(store, "create", "shared")  # remember the local name for the commands
    return keys


@contextmanager
def sharing(store: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`hyperfs share shared` in the background; yields (its HOST:PORT, the process)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperfs", "--store", str(store), "share", "shared", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("sharing hyper://")
        address = proc.stdout.readline().split()[-1]
        yield address, proc
    finally:
        proc.terminate()
        proc.wait(10)


def check_export(store: Path, key: bytes, dest: Path) -> None:
    hyperfs(store, "export", key.hex(), str(dest))
    for path, data in FILES.items():
        assert (dest / path.lstrip("/")).read_bytes() == data, path


def test_share_and_clone_between_hyperfs_stores(tmp_path: Path) -> None:
    key, content_key = make_drive(tmp_path / "a")
    with sharing(tmp_path / "a") as (address, _):
        out = hyperfs(tmp_path / "b", "clone", key.hex(), "--peer", address).stdout
        assert "cloned hyper://" in out
    check_export(tmp_path / "b", key, tmp_path / "out")
    # resumable and idempotent: a second clone finds everything and still verifies the head
    with sharing(tmp_path / "a") as (address, _):
        hyperfs(tmp_path / "b", "clone", key.hex(), "--peer", address)


def test_sparse_clone_fetches_only_the_metadata(tmp_path: Path) -> None:
    key, content_key = make_drive(tmp_path / "a")
    with sharing(tmp_path / "a") as (address, _):
        assert "(sparse)" in hyperfs(tmp_path / "b", "clone", key.hex(), "--peer", address, "--sparse").stdout

    async def content_blocks() -> tuple[int, int]:
        async with Corestore(str(tmp_path / "b")) as cs:
            content = await cs.get(key=content_key)
            return sum(content.has_local(i) for i in range(content.length)), content.length

    have, length = run(content_blocks)
    assert length == 0 or have < length


def test_drive_relayed_by_the_js_mirror(tmp_path: Path) -> None:
    require_peer()
    key, content_key = make_drive(tmp_path / "a")
    with sharing(tmp_path / "a") as (address, share):
        with js_peer(
            "mirror", "--storage", str(tmp_path / "js"), "--keys", f"{key.hex()},{content_key.hex()}",
            "--connect", address, "--listen", "0", "--timeout", "60000",
        ) as (_, mirror):
            assert {c["key"] for c in mirror["cores"]} == {key.hex(), content_key.hex()}
            share.terminate()  # the first store is gone: everything comes from JavaScript now
            share.wait(10)
            hyperfs(tmp_path / "c", "clone", key.hex(), "--peer", f"127.0.0.1:{mirror['port']}")
    check_export(tmp_path / "c", key, tmp_path / "out")



def test_seed_keeps_a_copy_and_serves_it_on(tmp_path: Path) -> None:
    key, _ = make_drive(tmp_path / "a")
    with sharing(tmp_path / "a") as (address, share):
        seed = subprocess.Popen(
            [sys.executable, "-m", "hyperfs", "--store", str(tmp_path / "s"), "seed", key.hex(),
             "--peer", address, "--listen", "127.0.0.1:0", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            assert seed.stdout is not None
            assert seed.stdout.readline().startswith("seeding hyper://")
            seeder = seed.stdout.readline().split()[-1]
            share.terminate()  # only the seeder has the drive now
            share.wait(10)
            hyperfs(tmp_path / "c", "clone", key.hex(), "--peer", seeder)
        finally:
            seed.terminate()
            seed.wait(10)
    check_export(tmp_path / "c", key, tmp_path / "out")


def test_clone_from_nowhere_fails_with_one_line(tmp_path: Path) -> None:
    key = "ab" * 32
    for peer, message in (("127.0.0.1:9", "cannot replicate with 127.0.0.1:9"), ("nohost", "not a HOST:PORT")):
        result = hyperfs(tmp_path / "b", "clone", key, "--peer", peer, check=False)
        assert result.returncode == 1
        assert result.stderr.startswith("hyperfs: ") and message in result.stderr
        assert "Traceback" not in result.stderr


def test_clone_from_several_peers_needs_one_that_answers(tmp_path: Path) -> None:
    """`--peer` repeated: the clone dials every one; a dead address is no error while another
    peer sends the drive, and the error, when none can, names them all."""
    key, _ = make_drive(tmp_path / "a")
    with sharing(tmp_path / "a") as (address, _):
        out = hyperfs(tmp_path / "b", "clone", key.hex(), "--peer", "127.0.0.1:9", "--peer", address).stdout
        assert "cloned hyper://" in out
    check_export(tmp_path / "b", key, tmp_path / "out")
    result = hyperfs(tmp_path / "c", "clone", key.hex(), "--peer", "127.0.0.1:9", "--peer", "127.0.0.1:11", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("hyperfs: cannot replicate with 127.0.0.1:9: ")
    assert "; 127.0.0.1:11: " in result.stderr


def test_clone_finds_the_sharer_on_the_lan(tmp_path: Path) -> None:
    key, _ = make_drive(tmp_path / "a")
    with sharing(tmp_path / "a"):
        out = hyperfs(tmp_path / "b", "clone", key.hex()).stdout  # no --peer: mDNS
        assert "cloned hyper://" in out
    check_export(tmp_path / "b", key, tmp_path / "out")


def test_mount_finds_the_sharer_on_the_lan(tmp_path: Path) -> None:
    """A key the store does not hold, mounted without --peer: like `clone`, the mount looks for
    a peer sharing it on the LAN, says so, and reads from it."""
    key, _ = make_drive(tmp_path / "a")
    with sharing(tmp_path / "a"), mounted(tmp_path / "b", tmp_path / "mnt", key.hex()) as m:
        assert "looking for a peer sharing it on the LAN" in m.said
        assert (m.path / "deep" / "a" / "b" / "c.txt").read_bytes() == FILES["/deep/a/b/c.txt"]


def test_mdns_announces_the_discovery_key_only(tmp_path: Path) -> None:
    key, content_key = make_drive(tmp_path / "a")
    with sharing(tmp_path / "a"):
        zc = zeroconf.Zeroconf(interfaces=["127.0.0.1"], ip_version=zeroconf.IPVersion.V4Only)
        try:
            names: list[str] = []
            zeroconf.ServiceBrowser(zc, "_hyperfs._tcp.local.", handlers=[lambda **kw: names.append(kw["name"])])
            deadline = time.monotonic() + 10
            while not names and time.monotonic() < deadline:
                time.sleep(0.1)
            info = zc.get_service_info("_hyperfs._tcp.local.", names[0], 3000)
        finally:
            zc.close()
    assert info is not None
    assert info.properties == {b"dk": discovery_key(key).hex().encode()}
    text = repr(info) + repr(info.properties) + names[0]
    assert key.hex() not in text and content_key.hex() not in text
