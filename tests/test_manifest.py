"""manifest.json: normalisation, encoding (v0, v1, v2), manifest hash = core key, ids."""

import pytest

from hyperfs.core import caps, z32
from hyperfs.core.crypto import discovery_key, hash32, key_pair
from hyperfs.core.manifest import (
    Manifest,
    Prologue,
    Signer,
    core_key,
    create_manifest,
    decode_manifest,
    default_signer_manifest,
    encode_manifest,
    manifest_from_dict,
    manifest_hash,
    manifest_to_dict,
)
from hyperfs.errors import DecodingError, InvalidArgumentError, InvalidKeyError
from tests.vectors import load

V = load("manifest")


@pytest.mark.parametrize("case", V["cases"], ids=lambda c: c["name"])
def test_manifest_case(case):
    manifest = manifest_from_dict(case["manifest"])
    assert manifest_to_dict(manifest) == case["manifest"]
    encoded = encode_manifest(manifest)
    assert encoded.hex() == case["encoded"]
    assert (caps.MANIFEST + encoded).hex() == case["manifestHash_preimage"]
    key = manifest_hash(manifest)
    assert key.hex() == case["key"]
    assert discovery_key(key).hex() == case["discoveryKey"]
    assert z32.encode_id(key) == case["id"]
    decoded = decode_manifest(encoded)
    if manifest.version == 0:
        # v0 encoding drops signer-independent fields; it must re-encode to the same bytes.
        assert encode_manifest(decoded) == encoded
    else:
        assert decoded == manifest


@pytest.mark.parametrize("case", V["discoveryKeys"], ids=lambda c: c["key"][:8])
def test_discovery_keys(case):
    assert discovery_key(bytes.fromhex(case["key"])).hex() == case["discoveryKey"]


def test_default_signer_manifest_is_70_bytes_and_key_from_public_key():
    pk = key_pair(bytes(32)).public_key
    manifest = default_signer_manifest(pk)
    assert len(encode_manifest(manifest)) == 70
    assert core_key(pk).hex() == V["cases"][0]["key"]
    assert core_key(pk, compat=True) == pk


def test_normalisation_defaults():
    a, b, c = (key_pair(bytes([i]) * 32).public_key for i in (1, 2, 3))
    assert create_manifest([a]).quorum == 1
    assert create_manifest([a, b]).quorum == 2
    assert create_manifest([a, b, c]).quorum == 2
    assert create_manifest([]).quorum == 0
    assert create_manifest([a], user_data=b"x").version == 2
    assert create_manifest([a], linked=[b]).version == 2
    assert create_manifest([a]).signers[0].namespace == caps.DEFAULT_NAMESPACE


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"signers": [b"\x01" * 32], "quorum": 2}, InvalidArgumentError),
        ({"signers": [b"\x01" * 32], "quorum": -1}, InvalidArgumentError),
        ({"signers": [b"\x01" * 31]}, InvalidKeyError),
        ({"signers": [b"\x01" * 32], "hash": "sha256"}, InvalidArgumentError),
        ({"signers": [Signer(b"\x01" * 32, b"\x02" * 5)]}, InvalidKeyError),
        ({"prologue": Prologue(b"\x00", 3)}, InvalidKeyError),
    ],
)
def test_bad_manifests_raise(kwargs, error):
    with pytest.raises(error):
        create_manifest(**kwargs)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",
        b"\x03\x00\x00\x01",
        bytes.fromhex(V["cases"][0]["encoded"])[:-1],
        bytes.fromhex(V["cases"][0]["encoded"]) + b"\x00",
        b"\x01\x00\x00\x02\x01\x00" + bytes(64),  # quorum above signer count
        b"\x01\x00\x01\x00\x00",  # unknown hash type
        b"\x00\x00\x07",  # unknown v0 type
    ],
)
def test_corrupt_encodings_raise_decoding_error(data):
    with pytest.raises(DecodingError):
        decode_manifest(data)


def test_manifest_is_hashable_value():
    m = default_signer_manifest(b"\x05" * 32)
    assert isinstance(m, Manifest) and {m: 1}[default_signer_manifest(b"\x05" * 32)] == 1
    assert hash32(caps.MANIFEST, encode_manifest(m)) == manifest_hash(m)
