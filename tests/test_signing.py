"""signing.json: heads of four key pairs, compat cores, a version-0 manifest core; bad signatures."""

import pytest

from hyperfs.core import merkle
from hyperfs.core.crypto import key_pair, tree_hash
from hyperfs.core.encoding import TreeNode
from hyperfs.core.manifest import default_signer_manifest, manifest_from_dict, manifest_hash
from hyperfs.core.verifier import (
    MultiSignature,
    SignerProof,
    decode_multisig,
    encode_multisig,
    sign_head,
    signable,
    verify_head,
)
from hyperfs.errors import DecodingError, NotWritableError
from tests.vectors import block, load

V = load("signing")
BLOCKS = [block(i, s) for i, s in enumerate(V["block_sizes"])]


def roots_of(head):
    return [TreeNode(r["index"], r["size"], bytes.fromhex(r["hash"])) for r in head["roots"]]


@pytest.mark.parametrize("case", V["cases"], ids=lambda c: c["seed"][:2])
def test_default_cores(case):
    kp = key_pair(bytes.fromhex(case["seed"]))
    assert kp.secret_key.hex() == case["secretKey"]
    manifest = default_signer_manifest(kp.public_key)
    key = manifest_hash(manifest)
    assert key.hex() == case["key"] == case["manifestHash"]
    for head in case["heads"]:
        roots = roots_of(head)
        if "after" not in head:
            assert merkle.append_leaves([], 0, BLOCKS[: head["length"]])[1] == roots
        th = tree_hash(roots)
        assert th.hex() == head["treeHash"]
        assert signable(manifest, key, th, head["length"], head["fork"]).hex() == head["signable"]
        sig = sign_head(manifest, key, kp.secret_key, th, head["length"], head["fork"])
        assert sig.hex() == head["signature_stored"]
        decoded = decode_multisig(sig)
        assert decoded.proofs == [SignerProof(0, bytes.fromhex(head["signature_ed25519"]), 0)]
        assert decoded.patch == []
        assert verify_head(manifest, key, th, head["length"], head["fork"], sig)


@pytest.mark.parametrize("case", V["compat"], ids=lambda c: c["seed"][:2])
def test_compat_cores(case):
    kp = key_pair(bytes.fromhex(case["seed"]))
    key = kp.public_key
    assert key.hex() == case["key"]
    manifest = default_signer_manifest(key)
    for head in case["heads"]:
        th = tree_hash(roots_of(head))
        assert signable(manifest, key, th, head["length"], head["fork"]).hex() == head["signable"]
        sig = sign_head(manifest, key, kp.secret_key, th, head["length"], head["fork"])
        assert sig.hex() == head["signature_stored"] and len(sig) == 64
        assert verify_head(manifest, key, th, head["length"], head["fork"], sig)


@pytest.mark.parametrize("case", V["manifest_v0"], ids=lambda c: c["seed"][:2])
def test_version0_manifest_core(case):
    kp = key_pair(bytes.fromhex(case["seed"]))
    manifest = manifest_from_dict(case["manifest"])
    key = manifest_hash(manifest)
    assert key.hex() == case["key"]
    th = bytes.fromhex(case["treeHash"])
    assert signable(manifest, key, th, case["length"], case["fork"]).hex() == case["signable"]
    sig = sign_head(manifest, key, kp.secret_key, th, case["length"], case["fork"])
    assert sig.hex() == case["signature_stored"]
    assert verify_head(manifest, key, th, case["length"], case["fork"], sig)


def _head():
    case = V["cases"][1]
    kp = key_pair(bytes.fromhex(case["seed"]))
    manifest = default_signer_manifest(kp.public_key)
    head = case["heads"][1]
    th = bytes.fromhex(head["treeHash"])
    return kp, manifest, manifest_hash(manifest), th, head["length"], bytes.fromhex(head["signature_stored"])


def test_tampered_signatures_fail():
    kp, manifest, key, th, length, sig = _head()
    flipped = bytearray(sig)
    flipped[10] ^= 1
    assert not verify_head(manifest, key, th, length, 0, bytes(flipped))
    assert not verify_head(manifest, key, th, length + 1, 0, sig)
    assert not verify_head(manifest, key, bytes(32), length, 0, sig)
    assert not verify_head(manifest, key, th, length, 0, sig[:-1])  # undecodable
    assert not verify_head(manifest, key, th, length, 0, None)
    raw = decode_multisig(sig).proofs[0].signature
    twice = encode_multisig(MultiSignature([SignerProof(0, raw), SignerProof(0, raw)], []))
    assert verify_head(manifest, key, th, length, 0, twice) is False  # a signer counted twice
    out_of_range = encode_multisig(MultiSignature([SignerProof(1, raw)], []))
    assert not verify_head(manifest, key, th, length, 0, out_of_range)


def test_reader_cannot_sign():
    kp, manifest, key, th, length, _ = _head()
    with pytest.raises(NotWritableError):
        sign_head(manifest, key, None, th, length, 0)


@pytest.mark.parametrize("data", [b"", b"\x01\x00", b"\x01\x00" + bytes(64) + b"\x00", bytes(69)])
def test_bad_multisig_raises(data):
    with pytest.raises(DecodingError):
        decode_multisig(data)
