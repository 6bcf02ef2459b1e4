"""Bad input: garbage under a key raises CorruptStorageError naming the value; bad keys raise InvalidKeyError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperfs.core.encoding import TreeNode, encode_tree_node
from hyperfs.core.storage import Alias, KeyPair, keys, schema
from hyperfs.errors import CorruptStorageError, InvalidKeyError, SessionClosedError
from tests.storage_helpers import ZERO32, core, read_blocks, store, write_blocks  # noqa: F401 (fixtures)

GARBAGE = b"\xff\xff\xff"


def put_raw(store, key, value):
    store.rocks.commit([(key, value, None)])


@pytest.mark.parametrize(
    ("make_key", "read", "named"),
    [
        (lambda c: keys.data_head(c.core.data_pointer), lambda c: c.read().get_head(), "head of data 0"),
        (lambda c: keys.core_auth(c.core.core_pointer), lambda c: c.read().get_auth(), "auth of core 0"),
        (lambda c: keys.core_sessions(c.core.core_pointer), lambda c: c.read().get_sessions(), "sessions of core 0"),
        (lambda c: keys.data_dependency(c.core.data_pointer), lambda c: c.read().get_dependency(), "dependency of data 0"),
        (lambda c: keys.data_hints(c.core.data_pointer), lambda c: c.read().get_hints(), "hints of data 0"),
        (lambda c: keys.data_tree(c.core.data_pointer, 2), lambda c: c.read().get_tree_node(2), "tree node 2 of data 0"),
        (
            lambda c: keys.data_tree(c.core.data_pointer, 2),
            lambda c: list(c.create_tree_node_stream()),
            "tree node of data 0",
        ),
    ],
)
def test_corrupt_core_values(store, core, make_key, read, named):
    write_blocks(core, 2)
    put_raw(store, make_key(core), GARBAGE)
    with pytest.raises(CorruptStorageError, match=f"corrupt {named}"):
        read(core)
    assert read_blocks(core, 2) == [b"block0", b"block1"]  # the rest is still readable


def test_tree_node_under_the_wrong_index(store, core):
    put_raw(store, keys.data_tree(core.core.data_pointer, 4), encode_tree_node(TreeNode(6, 1, ZERO32)))
    with pytest.raises(CorruptStorageError, match="tree node 4 .* holds node 6"):
        core.read().get_tree_node(4)


def test_corrupt_core_record_and_store_head(store, core):
    put_raw(store, keys.store_core(ZERO32), GARBAGE)
    with pytest.raises(CorruptStorageError, match="core record"):
        store.resume(ZERO32)
    with pytest.raises(CorruptStorageError, match="core record"):
        list(store.create_core_stream())
    with pytest.raises(CorruptStorageError, match="core record"):
        store.create(key=ZERO32, discovery_key=ZERO32)
    put_raw(store, keys.store_head(), b"\x01")
    with pytest.raises(CorruptStorageError, match="store head"):
        store.create(key=b"\x01" * 32, discovery_key=b"\x01" * 32)
    with pytest.raises(CorruptStorageError, match="store head"):
        store.get_seed()


def test_garbage_keys_inside_a_range(store, core):
    write_blocks(core, 2)
    put_raw(store, keys.data_block(core.core.data_pointer, 0)[:-1] + b"\xfc\x01", b"x")
    with pytest.raises(CorruptStorageError, match="block key"):
        list(core.create_block_stream())
    put_raw(store, keys.store_core_range()[0] + b"\x01" * 5, b"x")
    with pytest.raises(CorruptStorageError, match="core key"):
        list(store.create_core_stream())


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_wrong_length_keys(store, bad):
    with pytest.raises(InvalidKeyError):
        store.create(key=bad, discovery_key=ZERO32)
    with pytest.raises(InvalidKeyError):
        store.create(key=ZERO32, discovery_key=bad)
    with pytest.raises(InvalidKeyError):
        store.create(key=ZERO32, discovery_key=ZERO32, key_pair=KeyPair(bad, b"\x00" * 64))
    with pytest.raises(InvalidKeyError):
        store.resume(bad)
    with pytest.raises(InvalidKeyError):
        store.set_seed(bad)
    assert not store.has(ZERO32)  # nothing half-created


def test_closed_store_refuses_reads_and_writes(store, core):
    store.close()
    with pytest.raises(SessionClosedError):
        core.read().get_head()
    with pytest.raises(SessionClosedError):
        write_blocks(core, 1)
    with pytest.raises(SessionClosedError):
        core.snapshot()
    core.close()
    with pytest.raises(SessionClosedError):
        core.read()


def test_odd_names_round_trip(store):
    odd = ["", "\x00", "a\x00\x00b", "\u00e9\U0001f600", "x" * 5000]
    for i, name in enumerate(odd):
        store.create(key=bytes([i]) * 32, discovery_key=bytes([i]) * 32, alias=Alias(name, ZERO32), user_data=[(name, b"v")])
        assert store.get_alias(Alias(name, ZERO32)) == bytes([i]) * 32
        assert store.resume(bytes([i]) * 32).read().get_user_data(name) == b"v"
    assert sorted(e.alias.name for e in store.create_alias_stream(ZERO32)) == sorted(odd)


DECODERS = [
    schema.decode_store_head,
    schema.decode_core_record,
    schema.decode_auth,
    schema.decode_head,
    schema.decode_hints,
    schema.decode_sessions,
    schema.decode_dependency,
]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), which=st.sampled_from(DECODERS))
def test_any_bytes_decode_or_raise_corrupt(data, which):
    try:
        schema.decode_value("fuzzed value", which, data)
    except CorruptStorageError as err:
        assert "corrupt fuzzed value" in str(err)


@settings(max_examples=300, deadline=None)
@given(key=st.binary(max_size=40))
def test_any_key_bytes_decode_or_raise_invalid_key(key):
    for decode in (keys.decode_index, keys.decode_bitfield_index_and_type, keys.decode_user_data_key,
                   keys.decode_local_key, keys.decode_store_discovery_key, keys.decode_store_alias):
        try:
            decode(key)
        except InvalidKeyError:
            pass
