"""The stable Noise key pair of a store (issue 5: "each peer has a stable Noise key pair").

Derived from the store's primary key the way Corestore 7 derives every key pair
(`createKeyPair(name)`: seed = BLAKE2b-256 keyed with the primary key over
`NS || namespace || utf8(name)`), under the name JS apps use for their swarm identity, so a JS
app sharing the primary key presents the same Noise public key. Nothing new is stored.
"""

from __future__ import annotations

from hyperfs.core.crypto import KeyPair, check_key, key_pair, keyed_hash32, namespace

CORESTORE_NS = namespace("corestore", 1)[0]
DEFAULT_NAMESPACE = bytes(32)
NOISE_KEY_PAIR_NAME = "hyperswarm"  # `new Hyperswarm({ keyPair: await store.createKeyPair('hyperswarm') })`


def derive_seed(primary_key: bytes, ns: bytes, name: str | bytes) -> bytes:
    """Corestore `deriveSeed(primaryKey, namespace, name)`: the 32-byte seed of a named key pair."""
    check_key(primary_key, 32, "primary key")
    check_key(ns, 32, "namespace")
    raw_name = name.encode("utf-8") if isinstance(name, str) else name
    return keyed_hash32(primary_key, CORESTORE_NS, ns, raw_name)


def noise_key_pair(primary_key: bytes) -> KeyPair:
    """The store's Noise static key pair: Corestore `createKeyPair('hyperswarm')` in the default namespace."""
    return key_pair(derive_seed(primary_key, DEFAULT_NAMESPACE, NOISE_KEY_PAIR_NAME))
