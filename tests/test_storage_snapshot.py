"""Read snapshots keep seeing the store as it was (seed test/snapshot.js)."""

from __future__ import annotations

import pytest

from hyperfs.core.encoding import TreeNode
from hyperfs.core.storage import Auth, Dependency, Head, Hints
from hyperfs.errors import NotWritableError, SessionClosedError
from tests.storage_helpers import (  # noqa: F401 (core, store: fixtures)
    NODE_HASH,
    SIGNATURE,
    ZERO32,
    bitfield_pages,
    blank_auth,
    core,
    read_blocks,
    read_tree_nodes,
    store,
    write_blocks,
)


def test_read_blocks_from_snapshot(core):
    write_blocks(core, 2)
    snap = core.snapshot()
    write_blocks(core, 2, start=2)
    assert read_blocks(snap, 3) == [b"block0", b"block1", None]
    assert read_blocks(core, 3)[2] == b"block2"
    assert snap.snapshotted and not core.snapshotted


def test_snapshot_is_not_writable(core):
    with pytest.raises(NotWritableError):
        core.snapshot().write()


def test_snapshots_from_atomized_core_do_not_get_updated(core):
    atom = core.create_atom()
    atom_core = core.atomize(atom)
    atom_init_snap = atom_core.snapshot()
    init_snap = core.snapshot()
    assert read_blocks(init_snap, 2) == [None, None]
    write_blocks(atom_core, 2)
    expected = [b"block0", b"block1"]
    assert read_blocks(atom_init_snap, 2) == [None, None]
    assert read_blocks(init_snap, 2) == [None, None]
    atom_post_snap = atom_core.snapshot()
    core_post_snap = core.snapshot()
    assert read_blocks(atom_post_snap, 2) == expected
    assert read_blocks(core_post_snap, 2) == [None, None]
    write_blocks(atom_core, 2, pre="override-")
    assert read_blocks(atom_core, 2) == [b"override-block0", b"override-block1"]
    assert read_blocks(atom_post_snap, 2) == expected
    atom.flush()
    assert read_blocks(atom_post_snap, 2) == expected
    assert read_blocks(atom_init_snap, 2) == [None, None]
    assert read_blocks(core_post_snap, 2) == [None, None]
    assert read_blocks(init_snap, 2) == [None, None]
    assert read_blocks(core, 2) == [b"override-block0", b"override-block1"]


def test_snapshots_immutable_all_operations(core):
    write_blocks(core, 2)
    snap = core.snapshot()
    write_blocks(core, 2, start=2)
    tx = core.write()
    tx.put_tree_node(TreeNode(0, 1, NODE_HASH))
    tx.set_auth(Auth(ZERO32, ZERO32, encryption_key=NODE_HASH))
    tx.set_head(Head(1, 3, NODE_HASH, SIGNATURE))
    tx.set_dependency(Dependency(1, 3))
    tx.set_hints(Hints(1))
    tx.put_user_data("key", b"value")
    tx.put_bitfield_page(0, b"bitfield-data-1")
    tx.flush()

    assert read_blocks(core, 4) == [b"block0", b"block1", b"block2", b"block3"]
    assert read_blocks(snap, 4) == [b"block0", b"block1", None, None]
    assert read_tree_nodes(core, 2) != [None, None]
    assert read_tree_nodes(snap, 2) == [None, None]
    rx, srx = core.read(), snap.read()
    assert rx.get_auth() != blank_auth() and srx.get_auth() == blank_auth()
    assert rx.get_head() is not None and srx.get_head() is None
    assert rx.get_dependency() is not None and srx.get_dependency() is None
    assert rx.get_hints() is not None and srx.get_hints() is None
    assert rx.get_user_data("key") is not None and srx.get_user_data("key") is None
    assert bitfield_pages(core, 2) != [None, None]
    assert bitfield_pages(snap, 2) == [None, None]


def test_snapshot_deps_are_immutable(core):
    tx = core.write()
    tx.set_head(Head(0, 5, NODE_HASH, SIGNATURE))
    tx.flush()
    session = core.create_session("test", None)
    snap = session.snapshot()
    session.update_dependency_length(6)
    assert snap.core.dependencies == (Dependency(core.core.data_pointer, 5),)
    assert session.core.dependencies == (Dependency(core.core.data_pointer, 6),)


def test_snapshot_streams_survive_deletes_and_overwrites(core):
    write_blocks(core, 4)
    snap = core.snapshot()
    tx = core.write()
    tx.delete_block_range(1, 3)
    tx.put_block(0, b"new0")
    tx.put_block(7, b"block7")
    tx.flush()
    assert list(snap.create_block_stream()) == [(i, f"block{i}".encode()) for i in range(4)]
    assert [e.index for e in snap.create_block_stream(reverse=True)] == [3, 2, 1, 0]
    assert [e.index for e in core.create_block_stream()] == [0, 3, 7]


def test_snapshot_outlives_its_first_user_until_the_last_closes(core):
    write_blocks(core, 2)
    tx = core.write()
    tx.set_head(Head(0, 2, ZERO32, None))
    tx.flush()
    session = core.create_session("s", None)
    snap = core.snapshot()
    snap_session = snap.resume_session("s")
    write_blocks(session, 1, start=2)
    snap.close()
    with pytest.raises(SessionClosedError):
        snap.read()
    # the session resumed from the snapshot still reads through it
    assert read_blocks(snap_session, 3) == [b"block0", b"block1", None]
    assert read_blocks(session, 3) == [b"block0", b"block1", b"block2"]
    snap_session.close()
    with pytest.raises(SessionClosedError):
        snap_session._reader.get(b"\x00")
