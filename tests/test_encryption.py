"""encryption.json: key derivation, stored bytes of an encrypted core, forks in the padding."""

import hashlib

import pytest

from hyperfs.core import merkle
from hyperfs.core.block_encryption import BlockEncryption, block_key
from hyperfs.core.crypto import key_pair, tree_hash
from hyperfs.core.manifest import default_signer_manifest, manifest_hash
from hyperfs.core.verifier import sign_head
from hyperfs.errors import DecodingError, InvalidKeyError
from tests.vectors import block, block_fork, load

V = load("encryption")
CORE = V["core"]
ENC_KEY = bytes.fromhex(CORE["encryptionKey"])


def check_bytes(data, expected):
    if isinstance(expected, str):
        assert data.hex() == expected
    elif "hex" in expected:
        assert len(data) == expected["size"] and data.hex() == expected["hex"]
    else:
        assert len(data) == expected["size"]
        assert data[:64].hex() == expected["prefix_hex"]
        assert hashlib.blake2b(data, digest_size=32).hexdigest() == expected["blake2b256"]


def test_derive_keys():
    dk = V["derive_keys"]
    core_key, ek = bytes.fromhex(dk["coreKey"]), bytes.fromhex(dk["encryptionKey"])
    for mode, kwargs in (("default", {}), ("compat", {"compat": True}), ("block_mode", {"is_block_key": True})):
        enc = BlockEncryption.for_core(core_key, ek, **kwargs)
        assert enc.block_key.hex() == dk[mode]["block"]
        assert enc.blinding_key.hex() == dk[mode]["blinding"]


def test_core_blocks_and_head():
    kp = key_pair(bytes.fromhex(CORE["seed"]))
    manifest = default_signer_manifest(kp.public_key)
    key = manifest_hash(manifest)
    assert key.hex() == CORE["key"]
    enc = BlockEncryption.for_core(key, ENC_KEY)
    assert enc.block_key.hex() == CORE["blockKey"] and enc.blinding_key.hex() == CORE["blindingKey"]
    stored = []
    for b in CORE["blocks"]:
        plain = block(b["index"], V["block_sizes"][b["index"]])
        check_bytes(plain, b["plaintext"])
        out = enc.encrypt(b["index"], plain, 0)
        check_bytes(out, b["stored"])
        assert out[:8].hex() == b["padding_hex"]
        assert enc.fork_of(b["index"], out) == b["padding_unblinded_fork"]
        assert enc.decrypt(b["index"], out) == plain
        stored.append(out)
    nodes, roots = merkle.append_leaves([], 0, stored)
    for b, n in zip(CORE["blocks"], [n for n in nodes if n.index % 2 == 0]):
        assert n.hash.hex() == b["leafHash"] and n.size == b["leafSize"]
    head = CORE["head"]
    assert sorted(nodes) == sorted(
        (n["index"], n["size"], bytes.fromhex(n["hash"])) for n in head["nodes"]
    )
    assert merkle.byte_length(roots) == head["byteLength"]
    assert head["byteLength"] - 8 * head["length"] == head["byteLength_user"]
    th = tree_hash(roots)
    assert th.hex() == head["treeHash"]
    assert sign_head(manifest, key, kp.secret_key, th, head["length"], 0).hex() == head["signature_stored"]


def test_after_truncate_padding_carries_fork():
    key = bytes.fromhex(CORE["key"])
    enc = BlockEncryption.for_core(key, ENC_KEY)
    after = CORE["after_truncate_4_and_append"]
    for b in after["blocks"]:
        plain = block_fork(b["index"], b["plaintext"]["size"])
        check_bytes(plain, b["plaintext"])
        out = enc.encrypt(b["index"], plain, after["fork"])
        check_bytes(out, b["stored"])
        assert enc.fork_of(b["index"], out) == after["fork"] == b["padding_unblinded_fork"]
        assert out[:8].hex() == b["padding_hex"]
        assert merkle.append_leaves([], 0, [out])[0][0].hash.hex() == b["leafHash"]


def test_block_key_mode():
    bm = V["block_mode"]
    enc = BlockEncryption.for_core(bytes.fromhex(CORE["key"]), ENC_KEY, is_block_key=True)
    assert enc.block_key.hex() == bm["blockKey"] and enc.blinding_key.hex() == bm["blindingKey"]
    stored = []
    for b in bm["blocks"]:
        out = enc.encrypt(b["index"], bytes.fromhex(b["plaintext"]), 0)
        assert out.hex() == b["stored"]
        stored.append(out)
    assert tree_hash(merkle.append_leaves([], 0, stored)[1]).hex() == bm["treeHash"]


@pytest.mark.parametrize("case", V["static_encrypt"]["cases"], ids=lambda c: f"{c['index']}/{c['fork']}")
def test_static_encrypt(case):
    enc = BlockEncryption(bytes.fromhex(V["derive_keys"]["default"]["block"]))
    out = enc.encrypt(case["index"], bytes.fromhex(case["plaintext"]), case["fork"])
    assert out.hex() == case["encrypted"]
    assert enc.decrypt(case["index"], out).hex() == case["plaintext"]
    assert enc.fork_of(case["index"], out) == case["fork"]


def test_bad_inputs():
    enc = BlockEncryption(bytes(32))
    with pytest.raises(DecodingError):
        enc.decrypt(0, b"1234567")
    with pytest.raises(InvalidKeyError):
        BlockEncryption(b"short")
    with pytest.raises(InvalidKeyError):
        block_key(bytes(32), b"\x01" * 31)
