"""Per-core values, deletes and named sessions (seed test/core.js)."""

from __future__ import annotations

import pytest

from hyperfs.core.encoding import TreeNode
from hyperfs.core.storage import Auth, CorestoreStorage, Dependency, Head, Hints, Session
from hyperfs.errors import NotWritableError
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


def test_read_and_write_blocks_across_multiple_cores(store):
    cores = [store.create(key=bytes([k]) * 32, discovery_key=bytes([k]) * 32) for k in (0, 1, 2)]
    for i, c in enumerate(cores):
        write_blocks(c, 2, pre=f"c{i}-")
    for i, c in enumerate(cores):
        assert read_blocks(c, 3) == [f"c{i}-block0".encode(), f"c{i}-block1".encode(), None]


def test_delete_block_and_block_range(core):
    write_blocks(core, 5)
    tx = core.write()
    tx.delete_block(0)
    tx.delete_block_range(2, 4)
    tx.flush()
    assert read_blocks(core, 6) == [None, b"block1", None, None, b"block4", None]
    tx = core.write()
    tx.delete_block_range(1)
    tx.flush()
    assert read_blocks(core, 6) == [None] * 6


def test_tree_nodes_put_get_delete(core):
    nodes = [TreeNode(i, 10 + i, bytes([i]) * 32) for i in range(5)]
    tx = core.write()
    for node in nodes:
        tx.put_tree_node(node)
    tx.flush()
    assert read_tree_nodes(core, 6) == nodes + [None]
    tx = core.write()
    tx.delete_tree_node(0)
    tx.delete_tree_node_range(2, 4)
    tx.flush()
    assert read_tree_nodes(core, 5) == [None, nodes[1], None, None, nodes[4]]


def test_auth_sessions_head_dependency_hints(core):
    rx = core.read()
    assert rx.get_auth() == blank_auth()
    assert rx.get_sessions() is None
    assert rx.get_head() is None
    assert rx.get_dependency() is None
    assert rx.get_hints() is None
    tx = core.write()
    tx.set_auth(Auth(ZERO32, ZERO32, encryption_key=NODE_HASH))
    tx.set_sessions([Session("session0", 0), Session("session1", 1)])
    tx.set_head(Head(1, 3, NODE_HASH, SIGNATURE))
    tx.set_dependency(Dependency(1, 3))
    tx.set_hints(Hints(1))
    tx.flush()
    rx = core.read()
    assert rx.get_auth() == Auth(ZERO32, ZERO32, encryption_key=NODE_HASH)
    assert rx.get_sessions() == [Session("session0", 0), Session("session1", 1)]
    assert rx.get_head() == Head(1, 3, NODE_HASH, SIGNATURE)
    assert rx.get_dependency() == Dependency(1, 3)
    assert rx.get_hints() == Hints(1)
    tx = core.write()
    tx.set_hints(Hints(0))
    tx.flush()
    assert core.read().get_hints() == Hints(0)


def test_user_data_and_bitfield_pages(core):
    tx = core.write()
    tx.put_user_data("key", b"value")
    tx.put_user_data("other", "text")
    for i in range(4):
        tx.put_bitfield_page(i, f"page{i}".encode())
    tx.flush()
    assert core.read().get_user_data("key") == b"value"
    assert core.read().get_user_data("other") == b"text"
    tx = core.write()
    tx.delete_user_data("key")
    tx.delete_bitfield_page(0)
    tx.delete_bitfield_page_range(2)
    tx.flush()
    assert core.read().get_user_data("key") is None
    assert bitfield_pages(core, 4) == [None, b"page1", None, None]


def test_cannot_write_or_create_sessions_on_snapshot(core):
    snap = core.snapshot()
    with pytest.raises(NotWritableError):
        snap.write()
    with pytest.raises(NotWritableError):
        snap.create_session("s", None)


def test_resume_a_snapshot_session_is_a_snapshot_too(core):
    write_blocks(core, 2)
    snap = core.snapshot()
    session = core.create_session("sess", None)
    session_snap = session.snapshot()
    assert not session.snapshotted
    init = [b"block0", b"block1", None]
    assert read_blocks(snap, 3) == init
    assert read_blocks(session, 3) == [None, None, None]
    write_blocks(core, 1, pre="core-", start=2)
    write_blocks(session, 1, pre="sess-", start=2)
    assert read_blocks(session, 3) == [None, None, b"sess-block2"]
    assert read_blocks(core, 3) == [b"block0", b"block1", b"core-block2"]
    assert read_blocks(snap, 3) == init
    assert read_blocks(session_snap, 3) == [None, None, None]
    resumed_snap = session_snap.resume_session("sess")
    resumed = core.resume_session("sess")
    assert resumed_snap.snapshotted and not resumed.snapshotted
    assert read_blocks(resumed, 3) == [None, None, b"sess-block2"]
    assert read_blocks(resumed_snap, 3) == [None, None, None]
    assert core.resume_session("nope") is None


def test_create_named_sessions(core):
    tx = core.write()
    tx.set_head(Head(0, 10, ZERO32, None))
    tx.flush()
    a = core.create_session("a", None)
    b = core.resume_session("a")
    c = b.resume_session("a")
    for s in (a, b, c):
        assert s.core.dependencies == (Dependency(core.core.data_pointer, 10),)


def test_session_reads_dependency_below_its_length(store, core):
    write_blocks(core, 4)
    tx = core.write()
    tx.put_tree_node(TreeNode(0, 6, NODE_HASH))
    tx.put_tree_node(TreeNode(4, 6, NODE_HASH))
    tx.set_head(Head(0, 4, ZERO32, None))
    tx.flush()
    session = core.create_session("s", Head(0, 2, ZERO32, None))
    assert session.read().get_head() == Head(0, 2, ZERO32, None)
    assert read_blocks(session, 3) == [b"block0", b"block1", None]
    # node 0 spans block 0 (below length 2): from the core; node 4 spans block 2: not shared
    assert read_tree_nodes(session, 1) == [TreeNode(0, 6, NODE_HASH)]
    assert session.read().get_tree_node(4) is None
    with pytest.raises(Exception, match="ahead of the core"):
        core.create_session("t", Head(0, 9, ZERO32, None))
    # re-creating a session starts it over
    write_blocks(session, 1, start=5)
    again = core.create_session("s", None)
    assert again.core.data_pointer == session.core.data_pointer
    assert again.read().get_block(5) is None
    # the session survives a reopen with its dependency
    store.close()
    reopened = CorestoreStorage(store.path)
    resumed = reopened.resume(ZERO32).resume_session("s")
    assert resumed.core.dependencies == (Dependency(core.core.data_pointer, 4),)
    assert read_blocks(resumed, 2) == [b"block0", b"block1"]
    reopened.close()


def test_dependency_bookkeeping(core):
    tx = core.write()
    tx.set_head(Head(0, 5, ZERO32, None))
    tx.flush()
    session = core.create_session("s", None)
    assert session.get_dependency_length() == 5
    assert session.get_dependency(6) == Dependency(core.core.data_pointer, 5)
    assert session.get_dependency(5) is None
    session.update_dependency_length(3, truncated=True)
    assert session.dependencies == (Dependency(core.core.data_pointer, 3),)
    session.set_dependency_head(Dependency(core.core.data_pointer, 4))
    assert session.dependencies == (Dependency(core.core.data_pointer, 4),)
    session.set_dependency_head(Dependency(99, 2))
    assert session.dependencies == (Dependency(99, 2),)
    assert core.get_dependency_length() == -1


def test_atomic_session(core):
    write_blocks(core, 2)
    atom = core.create_atom()
    s = core.create_atomic_session(atom, Head(0, 2, ZERO32, None))
    assert s.read().get_head() == Head(0, 2, ZERO32, None)
    assert core.read().get_head() is None
    atom.flush()
    assert core.read().get_head() == Head(0, 2, ZERO32, None)
