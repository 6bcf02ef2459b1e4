"""Atoms: writes to one or more cores staged together and committed by `atom.flush()` (seed test/atomic.js)."""

from __future__ import annotations

import pytest

from hyperfs.core.encoding import TreeNode
from hyperfs.core.storage import Auth, Dependency, Head, Hints
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


def blocks(*names):
    return [None if n is None else n.encode() for n in names]


def test_basic_atomized_flow_with_a_single_core(core):
    write_blocks(core, 2)
    assert read_blocks(core, 3) == blocks("block0", "block1", None)
    atom = core.create_atom()
    atom_core = core.atomize(atom)
    write_blocks(atom_core, 1, start=2)
    expected = blocks("block0", "block1", "block2", None)
    assert read_blocks(core, 4) == blocks("block0", "block1", None, None)
    assert read_blocks(atom_core, 4) == expected
    atom.flush()
    assert read_blocks(core, 4) == expected
    assert read_blocks(atom_core, 4) == expected


def test_write_to_original_core_while_there_is_an_atomized_one(core):
    write_blocks(core, 2)
    atom = core.create_atom()
    atom_core = core.atomize(atom)
    write_blocks(core, 1, start=2)
    expected = blocks("block0", "block1", "block2", None)
    assert read_blocks(core, 4) == expected
    assert read_blocks(atom_core, 4) == expected
    atom.flush()
    assert read_blocks(core, 4) == expected
    assert read_blocks(atom_core, 4) == expected


def test_first_writes_to_a_core_are_from_an_atom(core):
    atom = core.create_atom()
    atom_core = core.atomize(atom)
    write_blocks(atom_core, 1)
    assert read_blocks(atom_core, 2) == blocks("block0", None)
    assert read_blocks(core, 2) == [None, None]
    atom.flush()
    assert read_blocks(core, 2) == blocks("block0", None)


def test_atomized_flow_with_write_delete_operations(core):
    write_blocks(core, 3)
    atom = core.create_atom()
    atom_core = core.atomize(atom)
    tx = atom_core.write()
    tx.delete_block(1)
    tx.delete_block(4)  # does not exist yet
    assert tx.flush() is False  # staged in the atom, not written
    write_blocks(atom_core, 3, start=3)
    expected = blocks("block0", None, "block2", "block3", "block4", "block5", None)
    assert read_blocks(atom_core, 7) == expected
    assert read_blocks(core, 7) == blocks("block0", "block1", "block2", None, None, None, None)
    atom.flush()
    assert read_blocks(core, 7) == expected


def test_atomized_flow_with_all_non_delete_operations(core):
    write_blocks(core, 2)
    atom = core.create_atom()
    atom_core = core.atomize(atom)
    write_blocks(atom_core, 2, start=2)
    node = TreeNode(0, 1, NODE_HASH)
    auth = Auth(ZERO32, ZERO32, encryption_key=NODE_HASH)
    head = Head(1, 3, NODE_HASH, SIGNATURE)
    tx = atom_core.write()
    tx.put_tree_node(node)
    tx.set_auth(auth)
    tx.set_head(head)
    tx.set_dependency(Dependency(1, 3))
    tx.set_hints(Hints(1))
    tx.put_user_data("key", b"value")
    tx.put_bitfield_page(0, b"bitfield-data-1")
    tx.flush()

    exp_blocks = blocks("block0", "block1", "block2", "block3", None)

    def check(target):
        rx = target.read()
        assert read_blocks(target, 5) == exp_blocks
        assert read_tree_nodes(target, 2) == [node, None]
        assert rx.get_auth() == auth
        assert rx.get_head() == head
        assert rx.get_dependency() == Dependency(1, 3)
        assert rx.get_hints() == Hints(1)
        assert rx.get_user_data("key") == b"value"
        assert bitfield_pages(target, 2) == [b"bitfield-data-1", None]

    check(atom_core)
    rx = core.read()
    assert read_blocks(core, 5) == blocks("block0", "block1", None, None, None)
    assert read_tree_nodes(core, 2) == [None, None]
    assert rx.get_auth() == blank_auth()
    assert rx.get_head() is None
    assert rx.get_dependency() is None
    assert rx.get_hints() is None
    assert rx.get_user_data("key") is None
    assert bitfield_pages(core, 2) == [None, None]
    atom.flush()
    check(core)


def test_basic_atomized_flow_with_multiple_cores(store):
    cores = [store.create(key=bytes([k]) * 32, discovery_key=bytes([k]) * 32) for k in (0, 0x11, 0x22)]
    for i, c in enumerate(cores):
        write_blocks(c, 2, pre=f"c{i}-")
    atom = store.create_atom()
    atom_cores = [c.atomize(atom) for c in cores]
    for i, c in enumerate(atom_cores):
        write_blocks(c, 2, start=2, pre=f"c{i}-")
    exp = [[f"c{i}-block{j}".encode() for j in range(4)] + [None] for i in range(3)]
    init = [[f"c{i}-block{j}".encode() for j in range(2)] + [None] for i in range(3)]
    assert [read_blocks(c, 5) for c in atom_cores] == exp
    assert [read_blocks(c, 3) for c in cores] == init
    flushed = []
    atom.on_flush(lambda: flushed.append(True))
    atom.flush()
    assert flushed == [True]
    assert [read_blocks(c, 5) for c in cores] == exp


@pytest.mark.parametrize("atom_first", [False, True])
def test_conflicting_writes_atomized_wins(core, atom_first):
    write_blocks(core, 2)
    atom = core.create_atom()
    atom_core = core.atomize(atom)
    if atom_first:
        write_blocks(atom_core, 1, pre="atom-", start=2)
        write_blocks(core, 2, pre="orig-", start=2)
    else:
        write_blocks(core, 2, pre="orig-", start=2)
        write_blocks(atom_core, 1, pre="atom-", start=2)
    expected = blocks("block0", "block1", "atom-block2", "orig-block3", None)
    assert read_blocks(core, 5) == blocks("block0", "block1", "orig-block2", "orig-block3", None)
    assert read_blocks(atom_core, 5) == expected
    atom.flush()
    assert read_blocks(core, 5) == expected


def test_atom_range_delete_hides_stored_and_staged(core):
    write_blocks(core, 3)
    atom = core.create_atom()
    atom_core = core.atomize(atom)
    write_blocks(atom_core, 2, start=3)
    tx = atom_core.write()
    tx.delete_block_range(1, 4)
    tx.flush()
    assert read_blocks(atom_core, 6) == blocks("block0", None, None, None, "block4", None)
    assert [e.index for e in atom_core.create_block_stream()] == [0, 4]
    assert [e.index for e in atom_core.create_block_stream(reverse=True)] == [4, 0]
    atom.flush()
    assert [e.index for e in core.create_block_stream()] == [0, 4]


def test_atomize_with_another_atom_is_refused(core):
    atom_core = core.atomize(core.create_atom())
    with pytest.raises(Exception, match="different atom"):
        atom_core.atomize(core.create_atom())
