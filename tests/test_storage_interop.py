"""A store written by the real JS stack (Corestore 7 / hypercore-storage 3.x) reads back here."""

from __future__ import annotations

import time

from hyperfs.core.storage import CorestoreStorage
from tests.interop import interop_block, js_peer


def test_read_a_store_written_by_js(tmp_path):
    folder = str(tmp_path / "js")
    with js_peer("seed", "--storage", folder, "--blocks", "5", "--listen", "0") as (_, info):
        pass  # the peer is stopped on exit; what it appended is in its RocksDB WAL
    store = CorestoreStorage(folder)
    dkey = bytes.fromhex(info["discoveryKey"])
    assert store.get_default_discovery_key() == dkey
    assert store.get_seed() is not None
    assert [e.discovery_key for e in store.create_core_stream()] == [dkey]

    core = store.resume(dkey)
    rx = core.read()
    head = rx.get_head()
    assert head.length == info["length"] == 5
    assert head.root_hash.hex() == info["treeHash"]
    assert head.timestamp is not None  # 3.x writes a timestamp after the signature
    auth = rx.get_auth()
    assert auth.key.hex() == info["key"]
    assert auth.key_pair.public_key.hex() == info["publicKey"]
    assert auth.manifest.signers[0].public_key.hex() == info["publicKey"]
    assert rx.get_blocks(list(range(6))) == [interop_block(i) for i in range(5)] + [None]
    nodes = list(core.create_tree_node_stream())
    assert [n.index for n in nodes] == [0, 1, 2, 3, 4, 5, 6, 8]
    assert sum(n.size for n in nodes if n.index % 2 == 0) == info["byteLength"]
    assert rx.get_hints().contiguous_length == 5
    store.close()


BLOB_BLOCKS = 3 * 1024


def test_read_js_blob_files(tmp_path):
    """hypercore-storage keeps values of 4 KiB and more in RocksDB blob files; they read here too."""
    folder = tmp_path / "js"
    # peer.js appends 1024 blocks (64 MiB, the JS memtable size) per write: three writes switch
    # memtables at least twice, so a flush (which makes the blob files) is certain, not a race.
    with js_peer("seed", "--storage", str(folder), "--blocks", str(BLOB_BLOCKS), "--block-size", "65536", "--listen", "0"):
        deadline = time.monotonic() + 60  # RocksDB flushes its memtable in the background
        while not list((folder / "db").glob("*.blob")) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert list((folder / "db").glob("*.blob")), "the JS store flushed no blob file to read"
    store = CorestoreStorage(str(folder))
    core = store.resume()
    assert core.read().get_head().length == BLOB_BLOCKS
    blocks = core.read().get_blocks(list(range(BLOB_BLOCKS)))
    assert all(block == interop_block(i, 65536) for i, block in enumerate(blocks))
    tail = list(range(BLOB_BLOCKS - 10, BLOB_BLOCKS))
    assert [e.index for e in core.create_block_stream(gte=tail[0])] == tail
    store.close()
