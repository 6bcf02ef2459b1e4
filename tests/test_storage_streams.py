"""Range streams: blocks (with dependencies, reverse, atoms), tree nodes, bitfield, user data, local, cores, aliases (seed test/streams.js)."""

from __future__ import annotations

import pytest

from hyperfs.core.encoding import TreeNode
from hyperfs.core.storage import Alias, Head
from tests.storage_helpers import ZERO32, core, store  # noqa: F401 (core, store: fixtures)


def entries(indexes):
    return [(i, bytes([i])) for i in indexes]


def put_blocks(target, indexes):
    tx = target.write()
    for i in indexes:
        tx.put_block(i, bytes([i]))
    tx.flush()


def test_block_stream(core):
    put_blocks(core, range(10))
    assert list(core.create_block_stream(gte=0, lt=10)) == entries(range(10))
    assert list(core.create_block_stream(gte=0, lt=10, reverse=True)) == entries(reversed(range(10)))
    assert list(core.create_block_stream(gt=2, lte=5)) == entries(range(3, 6))


def _sessions_chain(core):
    """Three levels: core holds 0-9, session 'first' 10-19, session 'second' 20-29."""
    head = {"length": 0}

    def write(target):
        start = head["length"]
        tx = target.write()
        for i in range(start, start + 10):
            tx.put_block(i, bytes([i]))
        head["length"] += 10
        tx.set_head(Head(0, head["length"], ZERO32, bytes(64)))
        tx.flush()

    write(core)
    first = core.create_session("first", None)
    write(first)
    second = first.create_session("second", None)
    write(second)
    return second


@pytest.mark.parametrize(
    ("gte", "lt", "reverse", "expected"),
    [
        (0, 30, False, range(30)),
        (5, 25, False, range(5, 25)),
        (0, 30, True, range(29, -1, -1)),
        (5, 25, True, range(24, 4, -1)),
        (None, None, False, range(30)),
    ],
)
def test_dependency_stream(core, gte, lt, reverse, expected):
    second = _sessions_chain(core)
    assert list(second.create_block_stream(gte=gte, lt=lt, reverse=reverse)) == entries(expected)


def test_block_stream_atom(core):
    atom = core.create_atom()
    a = core.atomize(atom)
    put_blocks(a, [0, 2, 4, 6, 8])
    atom.flush()
    put_blocks(a, [1, 3, 5, 7, 9])
    expected = list(range(10))

    def check():
        assert list(a.create_block_stream(gte=0, lt=10)) == entries(expected)
        assert list(a.create_block_stream(gte=0, lt=10, reverse=True)) == entries(reversed(expected))

    check()
    tx = a.write()
    tx.delete_block_range(4, 6)
    tx.flush()
    expected = [0, 1, 2, 3, 6, 7, 8, 9]
    check()
    tx = a.write()
    tx.delete_block_range(0, 2)
    tx.delete_block_range(8, 9)
    tx.flush()
    expected = [2, 3, 6, 7, 9]
    check()
    tx = a.write()
    tx.delete_block_range(8, 10)
    tx.flush()
    expected = [2, 3, 6, 7]
    check()
    assert atom.view.changes, "used the atom's view"
    atom.flush()
    check()


def test_tree_node_bitfield_user_data_local_streams(core):
    tx = core.write()
    nodes = [TreeNode(i, i + 1, bytes([i]) * 32) for i in (0, 1, 2, 4)]
    for node in nodes:
        tx.put_tree_node(node)
    tx.put_bitfield_page(0, b"p0")
    tx.put_bitfield_page(3, b"p3")
    tx.put_user_data("b", b"2")
    tx.put_user_data("a", "1")
    tx.put_user_data("a\x00z", b"3")
    tx.put_local(b"\x01", b"x")
    tx.put_local(b"\x02\x00", b"y")
    tx.flush()
    assert list(core.create_tree_node_stream()) == nodes
    assert list(core.create_tree_node_stream(gte=1, lt=4)) == nodes[1:3]
    assert list(core.create_bitfield_stream()) == [(0, b"p0"), (3, b"p3")]
    assert list(core.create_user_data_stream()) == [("a", b"1"), ("a\x00z", b"3"), ("b", b"2")]
    assert list(core.create_user_data_stream(gte="a\x00", lt="b")) == [("a\x00z", b"3")]
    assert list(core.create_local_stream()) == [(b"\x01", b"x"), (b"\x02\x00", b"y")]
    tx = core.write()
    tx.delete_local_range(b"\x02")
    tx.delete_user_data("b")
    tx.flush()
    assert list(core.create_local_stream()) == [(b"\x01", b"x")]
    assert [e.key for e in core.create_user_data_stream()] == ["a", "a\x00z"]


def test_core_and_alias_streams(store):
    ns1, ns2 = b"\x01" * 32, b"\x02" * 32
    store.create(key=b"\x0a" * 32, discovery_key=b"\x0a" * 32, alias=Alias("one", ns1))
    store.create(key=b"\x0b" * 32, discovery_key=b"\x0b" * 32, alias=Alias("two", ns2))
    store.create(key=b"\x0c" * 32, discovery_key=b"\x0c" * 32)
    listed = list(store.create_core_stream())
    assert [e.discovery_key for e in listed] == [b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32]
    assert listed[0].core.alias == Alias("one", ns1)
    assert list(store.create_alias_stream()) == [(Alias("one", ns1), b"\x0a" * 32), (Alias("two", ns2), b"\x0b" * 32)]
    assert list(store.create_alias_stream(ns2)) == [(Alias("two", ns2), b"\x0b" * 32)]


def test_delete_core_and_clear(store):
    a = store.create(key=b"\x0a" * 32, discovery_key=b"\x0a" * 32, alias=Alias("one", ZERO32))
    b = store.create(key=b"\x0b" * 32, discovery_key=b"\x0b" * 32)
    put_blocks(a, range(3))
    session = a.create_session("s", None)
    put_blocks(session, [5])
    put_blocks(b, range(2))
    store.delete_core(b"\x0a" * 32)
    assert not store.has(b"\x0a" * 32)
    assert store.get_alias(Alias("one", ZERO32)) is None
    assert list(a.create_block_stream()) == []
    assert list(session.create_block_stream()) == []
    assert [e.index for e in b.create_block_stream()] == [0, 1]
    store.clear()
    assert list(store.create_core_stream()) == []
    assert list(b.create_block_stream()) == []
    assert store.get_default_discovery_key() is None
