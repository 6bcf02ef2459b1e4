"""Storage basics on real RocksDB: create/resume cores, write batches, read batches (seed test/basic.js)."""

from __future__ import annotations

import pytest

from hyperfs.core.encoding import TreeNode
from hyperfs.core.manifest import Manifest, Prologue, Signer
from hyperfs.core.storage import Alias, Auth, CorestoreStorage, Head, Hints, KeyPair
from hyperfs.errors import SessionClosedError
from tests.storage_helpers import store  # noqa: F401 (fixtures)

DKEY = bytes(32)



def test_create_and_resume_core(tmp_path):
    manifest = Manifest(1, 1, (Signer(b"\x02" * 32, b"\x01" * 32),), prologue=Prologue(b"\x03" * 32, 4))
    auth = Auth(b"\x04" * 32, DKEY, manifest, KeyPair(b"\x02" * 32, b"\x05" * 64), b"\x06" * 32)
    s = CorestoreStorage(str(tmp_path))
    core = s.create(
        key=auth.key, discovery_key=auth.discovery_key, manifest=auth.manifest, key_pair=auth.key_pair,
        encryption_key=auth.encryption_key, alias=Alias("a", b"\x07" * 32), user_data=[("hello", b"world")],
    )
    assert core.read().get_auth() == auth
    assert core.read().get_user_data("hello") == b"world"
    s.close()

    s = CorestoreStorage(str(tmp_path))
    assert s.has(DKEY)
    assert s.get_auth(DKEY) == auth
    assert s.get_alias(Alias("a", b"\x07" * 32)) == DKEY
    assert s.get_default_discovery_key() == DKEY
    resumed = s.resume(DKEY)
    assert resumed is not None and resumed.core == core.core
    assert s.resume(b"\x09" * 32) is None
    s.close()


def test_create_twice_resumes(store):
    a = store.create(key=DKEY, discovery_key=DKEY)
    b = store.create(key=DKEY, discovery_key=DKEY)
    assert a.core == b.core
    c = store.create(key=b"\x01" * 32, discovery_key=b"\x01" * 32)
    assert c.core.core_pointer == 1 and c.core.data_pointer == 1


def test_write_batch_commits_everything_and_read_batch_gets_it(tmp_path):
    s = CorestoreStorage(str(tmp_path))
    core = s.create(key=DKEY, discovery_key=DKEY)
    node = TreeNode(0, 6, b"\x0a" * 32)
    head = Head(0, 2, b"\x0b" * 32, b"\x0c" * 64)
    tx = core.write()
    tx.put_block(0, b"block0")
    tx.put_block(1, b"block1")
    tx.put_tree_node(node)
    tx.put_bitfield_page(0, b"\x03" + bytes(7))
    tx.set_head(head)
    tx.set_hints(Hints(2))
    tx.put_user_data("key", "value")
    tx.put_local(b"\x00local", b"x")
    assert tx.flush() is True
    s.close()

    s = CorestoreStorage(str(tmp_path))
    rx = s.resume(DKEY).read()
    assert rx.get_blocks([0, 1, 2]) == [b"block0", b"block1", None]
    assert rx.get_tree_node(0) == node
    assert rx.has_tree_node(0) and not rx.has_tree_node(2)
    assert rx.get_bitfield_page(0) == b"\x03" + bytes(7)
    assert rx.get_head() == head
    assert rx.get_hints() == Hints(2)
    assert rx.get_user_data("key") == b"value"
    assert rx.get_local(b"\x00local") == b"x"
    s.close()


def test_seed_and_default_key(store):
    assert store.get_seed() is None
    assert store.set_seed(b"\x01" * 32) == b"\x01" * 32
    assert store.set_seed(b"\x02" * 32, overwrite=False) == b"\x01" * 32
    assert store.get_seed() == b"\x01" * 32
    store.set_default_discovery_key(b"\x03" * 32)
    assert store.get_default_discovery_key() == b"\x03" * 32


def test_make_storage_and_core(store):
    assert not store.has(DKEY)
    assert store.resume(DKEY) is None
    c = store.create(key=DKEY, discovery_key=DKEY)
    assert store.has(DKEY)
    c.close()
    assert store.has(DKEY)
    assert store.resume(DKEY) is not None


def test_make_many(store):
    cores = [store.create(key=bytes([i]) * 32, discovery_key=bytes([i]) * 32) for i in range(50)]
    assert len({c.core.core_pointer for c in cores}) == 50


def test_first_core_created_is_the_default_core(store):
    assert store.get_default_discovery_key() is None
    store.create(key=b"\x01" * 32, discovery_key=b"\x02" * 32)
    assert store.get_default_discovery_key() == b"\x02" * 32
    store.create(key=b"\x03" * 32, discovery_key=b"\x03" * 32)
    assert store.get_default_discovery_key() == b"\x02" * 32
    assert store.get_auth(b"\x03" * 32) == Auth(b"\x03" * 32, b"\x03" * 32)
    assert store.get_auth(b"\x04" * 32) is None
    assert store.get_auth(b"\x02" * 32) == Auth(b"\x01" * 32, b"\x02" * 32)


def test_write_after_close_fails(store):
    c = store.create(key=b"\x01" * 32, discovery_key=b"\x02" * 32)
    w = c.write()
    w.put_user_data("test", b"\x00")
    store.close()
    with pytest.raises(SessionClosedError):
        w.flush()
