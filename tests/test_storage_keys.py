"""Key layout and stored values, byte for byte.

The key vectors were made with the real JS `hypercore-storage/lib/keys.js` (3.3.1, whose key
layout equals 1.9.6's for these keys) and index-encoder; the value bytes follow the seed's
`spec/hyperschema` by hand and the live 3.3.1 store bytes quoted in shared/spec/core-crypto.md.
"""

from __future__ import annotations

import pytest

from hyperfs.core.encoding import TreeNode, encode_tree_node
from hyperfs.core.manifest import Manifest, Prologue, Signer
from hyperfs.core.storage import keys, schema
from hyperfs.core.storage.schema import (
    Alias,
    Allocated,
    Auth,
    CoreRecord,
    Dependency,
    Head,
    Hints,
    KeyPair,
    Session,
    StoreHead,
)
from hyperfs.errors import InvalidArgumentError, InvalidKeyError

DK = b"\xab" * 32
NS = b"\x01" * 32

KEY_VECTORS = [
    (keys.store_head(), "00"),
    (keys.store_core(DK), "01" + "ab" * 32),
    (keys.store_core_by_alias(NS, "a\x00b\u00e9"), "02" + "01" * 32 + "0061000262c3a90001"),
    (keys.store_core_by_alias_range(NS)[0], "02" + "01" * 32),
    (keys.store_core_by_alias_range(NS)[1], "02" + "01" * 32 + "ff"),
    (keys.core_auth(300), "03fc012c00"),
    (keys.core_sessions(70000), "03fd0001117001"),
    (keys.data_head(5), "040500"),
    (keys.data_dependency(5), "040501"),
    (keys.data_hints(5), "040502"),
    (keys.data_block(1, 0), "04010300"),
    (keys.data_block(1, 251), "040103fb"),
    (keys.data_block(1, 252), "040103fc00fc"),
    (keys.data_block(1, 65535), "040103fcffff"),
    (keys.data_block(1, 65536), "040103fd00010000"),
    (keys.data_block(1, 4294967295), "040103fdffffffff"),
    (keys.data_block(1, 4294967296), "040103fe0000000100000000"),
    (keys.data_block(1, 2**53 - 1), "040103fe001fffffffffffff"),
    (keys.data_block(1, keys.INFINITY), "040103ff"),
    (keys.data_tree(2, 1000), "040204fc03e8"),
    (keys.data_bitfield(3, 7), "0403050700"),
    (keys.data_user_data(4, "hello\x00"), "0404060068656c6c6f00020001"),
    (keys.data_user_data_end(4), "040407"),
    (keys.data_local(4, b"\x00\x01\x02"), "040407000102"),
    (keys.data_local_end(4), "040408"),
]


@pytest.mark.parametrize(("key", "expected"), KEY_VECTORS)
def test_keys_match_js(key, expected):
    assert key.hex() == expected


def test_keys_decode_back():
    for i in (0, 251, 252, 65535, 65536, 2**32, 2**53 - 1):
        assert keys.decode_index(keys.data_block(9, i)) == i
    assert keys.decode_index(keys.data_block(9, keys.INFINITY)) == keys.INFINITY
    assert keys.decode_bitfield_index_and_type(keys.data_bitfield(1, 300)) == (300, 0)
    assert keys.decode_user_data_key(keys.data_user_data(1, "x\x00\x00y")) == "x\x00\x00y"
    assert keys.decode_local_key(keys.data_local(1, b"\x00\xff")) == b"\x00\xff"
    assert keys.decode_store_discovery_key(keys.store_core(DK)) == DK
    assert keys.decode_store_alias(keys.store_core_by_alias(NS, "name")) == (NS, "name")


def test_keys_sort_in_index_order():
    indexes = [0, 1, 251, 252, 253, 65535, 65536, 2**32 - 1, 2**32, 2**40, 2**53 - 1, keys.INFINITY]
    encoded = [keys.data_block(0, i) for i in indexes]
    assert encoded == sorted(encoded)
    names = ["", "\x00", "\x00\x00", "a", "a\x00", "a\x00b", "ab", "b"]
    encoded_names = [keys.data_user_data(0, n) for n in names]
    assert encoded_names == sorted(encoded_names)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33, "x" * 32])
def test_wrong_length_keys_raise(bad):
    with pytest.raises(InvalidKeyError, match="32 bytes"):
        keys.store_core(bad)
    with pytest.raises(InvalidKeyError, match="32 bytes"):
        keys.store_core_by_alias(bad, "name")


def test_key_limits():
    with pytest.raises(InvalidArgumentError):
        keys.data_local(0, b"\x00" * 2049)
    with pytest.raises(InvalidArgumentError):
        keys.data_block(0, -2)
    with pytest.raises(InvalidArgumentError):
        keys.data_block(0, 2**53)


@pytest.mark.parametrize(
    "bad",
    [b"\x04\x01\x03", b"\x04\x01\x03\xfc\x01", b"\x04\x01\x03\x00\x00", b"\x04"],
)
def test_malformed_keys_raise(bad):
    with pytest.raises(InvalidKeyError):
        keys.decode_index(bad)


@pytest.mark.parametrize("bad", [b"\x06\x00abc", b"\x06\x00ab\x00\x05", b"\x06\x01ab\x00\x01", b"\x06\x00\xff\x00\x01"])
def test_malformed_string_keys_raise(bad):
    with pytest.raises(InvalidKeyError):
        keys.decode_string(bad, 1)


def test_store_head_bytes():
    head = StoreHead(1, Allocated(2, 3), b"\x05" * 32, DK)
    data = schema.encode_store_head(head)
    assert data.hex() == "0107" + "0203" + "05" * 32 + "ab" * 32
    assert schema.decode_store_head(data) == head
    assert schema.encode_store_head(StoreHead(1, Allocated(0, 0))).hex() == "01010000"


def test_store_head_v2_from_hypercore_storage_3():
    data = bytes.fromhex("0201010002") + DK  # version 2, cores 1, datas 1, groups 0, flags {dkey}
    assert schema.decode_store_head(data) == StoreHead(2, Allocated(1, 1), None, DK)


def test_core_head_bytes_and_3x_trailer():
    head = Head(0, 2, b"\x11" * 32, b"\x22" * 68)
    data = schema.encode_head(head)
    assert data.hex() == "0002" + "11" * 32 + "44" + "22" * 68
    assert schema.decode_head(data) == head
    stamped = data + b"\x01" + (1700000000000).to_bytes(8, "little")
    assert schema.decode_head(stamped) == Head(0, 2, b"\x11" * 32, b"\x22" * 68, 1700000000000)
    assert schema.decode_head(data + b"\x00").timestamp is None
    assert schema.decode_head(schema.encode_head(Head(3, 0, bytes(32), None))).signature is None


def test_value_round_trips():
    manifest = Manifest(
        1, 2, (Signer(DK, NS), Signer(NS, DK)),
        allow_patch=True, prologue=Prologue(b"\x07" * 32, 9), linked=(DK,),
    )
    values = [
        (schema.encode_core_record, schema.decode_core_record, CoreRecord(1, 5, 6, Alias("n\u00e9", NS))),
        (schema.encode_core_record, schema.decode_core_record, CoreRecord(1, 0, 0)),
        (schema.encode_auth, schema.decode_auth, Auth(DK, NS, manifest, KeyPair(NS, b"\x09" * 64), b"\x03" * 32)),
        (schema.encode_auth, schema.decode_auth, Auth(DK, NS)),
        (schema.encode_hints, schema.decode_hints, Hints(7)),
        (schema.encode_sessions, schema.decode_sessions, [Session("a", 1), Session("b\x00", 300)]),
        (schema.encode_dependency, schema.decode_dependency, Dependency(3, 70000)),
    ]
    v2 = Manifest(2, 1, (Signer(DK, NS),), linked=(), user_data=b"hello")
    values.append((schema.encode_auth, schema.decode_auth, Auth(DK, NS, v2)))
    for encode, decode, value in values:
        assert decode(encode(value)) == value
    assert schema.encode_core_record(CoreRecord(1, 2, 3)).hex() == "01020300"
    assert schema.encode_dependency(Dependency(3, 300)).hex() == "03fd2c01"
    assert schema.encode_hints(Hints(0)).hex() == "00"
    assert schema.encode_hints(Hints(5)).hex() == "0105"
    # 3.x hints: contiguous 5, remote contiguous 9, recovering
    assert schema.decode_hints(bytes.fromhex("070509")) == Hints(5, 9, True)
    assert schema.encode_auth(Auth(DK, NS)).hex() == "ab" * 32 + "01" * 32 + "00"
    assert schema.encode_sessions([Session("a", 1)]).hex() == "01016101"


def test_tree_node_value_is_the_shared_encoding():
    assert encode_tree_node(TreeNode(4, 300, b"\x01" * 32)).hex() == "04fd2c01" + "01" * 32
