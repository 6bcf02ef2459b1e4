"""hypercore-crypto: the hashes, key pairs and signatures of Hypercore 11.

BLAKE2b-256 through hashlib and Ed25519 through PyNaCl (both C). See
`shared/spec/core-crypto.md` §1, §4, §5, §6.4.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import NamedTuple

import nacl.bindings
import nacl.exceptions

from hyperfs.core.encoding import TreeNode
from hyperfs.errors import InvalidKeyError

_LEAF = b"\x00"
_PARENT = b"\x01"
_ROOT = b"\x02"


class KeyPair(NamedTuple):
    """Ed25519 key pair; `secret_key` is 64 bytes (seed || public key) or None for a reader."""

    public_key: bytes
    secret_key: bytes | None


def hash32(*parts: bytes) -> bytes:
    """Unkeyed BLAKE2b-256 over the concatenation of `parts`."""
    h = hashlib.blake2b(digest_size=32)
    for part in parts:
        h.update(part)
    return h.digest()


def keyed_hash32(key: bytes, *parts: bytes) -> bytes:
    """BLAKE2b-256 in keyed mode (the key is BLAKE2b's parameter, not a prefix)."""
    h = hashlib.blake2b(digest_size=32, key=key)
    for part in parts:
        h.update(part)
    return h.digest()


# From this size on, a block is hashed by libsodium: its BLAKE2b (vectorised) takes ~25% less
# CPU than hashlib's reference C for a 64 KiB block (the common block size), which is ~40% of
# the CPU a big file's append costs. Below it, PyNaCl's ~16 us per call loses to hashlib.
_SODIUM_MIN = 32 * 1024


def leaf_hash(block: bytes | bytearray | memoryview) -> bytes:
    """The Merkle leaf hash of a stored block."""
    prefix = _LEAF + len(block).to_bytes(8, "little")
    if len(block) >= _SODIUM_MIN and isinstance(block, bytes):
        state = nacl.bindings.crypto_generichash_blake2b_init(digest_size=32)
        nacl.bindings.crypto_generichash_blake2b_update(state, prefix)
        nacl.bindings.crypto_generichash_blake2b_update(state, block)
        return nacl.bindings.crypto_generichash_blake2b_final(state)
    h = hashlib.blake2b(prefix, digest_size=32)
    h.update(block)
    return h.digest()


def parent_hash(left: TreeNode, right: TreeNode) -> bytes:
    """The hash of the parent of two sibling nodes (`left` has the lower index)."""
    if left.index > right.index:
        left, right = right, left
    h = hashlib.blake2b(_PARENT, digest_size=32)
    h.update((left.size + right.size).to_bytes(8, "little"))
    h.update(left.hash)
    h.update(right.hash)
    return h.digest()


def parent_node(left: TreeNode, right: TreeNode) -> TreeNode:
    """The parent node of two siblings."""
    idx = (left.index + right.index) // 2
    return TreeNode(idx, left.size + right.size, parent_hash(left, right))


def tree_hash(roots: Iterable[TreeNode]) -> bytes:
    """The root hash over the full roots of a tree, left to right."""
    h = hashlib.blake2b(_ROOT, digest_size=32)
    for root in roots:
        h.update(root.hash)
        h.update(root.index.to_bytes(8, "little"))
        h.update(root.size.to_bytes(8, "little"))
    return h.digest()


def namespace(name: str, count: int) -> list[bytes]:
    """hypercore-crypto `namespace(name, count)`: `B(B(utf8(name)) || byte(i))` for i < count."""
    base = hash32(name.encode("utf-8"))
    return [hash32(base, bytes((i,))) for i in range(count)]


def discovery_key(key: bytes) -> bytes:
    """The discovery key of a core key: keyed BLAKE2b-256 with the key over `hypercore`."""
    check_key(key, 32, "core key")
    return keyed_hash32(key, b"hypercore")


def key_pair(seed: bytes | None = None) -> KeyPair:
    """An Ed25519 key pair from a 32-byte seed (random without one)."""
    if seed is None:
        public_key, secret_key = nacl.bindings.crypto_sign_keypair()
    else:
        check_key(seed, 32, "key pair seed")
        public_key, secret_key = nacl.bindings.crypto_sign_seed_keypair(seed)
    return KeyPair(public_key, secret_key)


def sign(message: bytes, secret_key: bytes) -> bytes:
    """Detached Ed25519 signature (64 bytes) with a 64-byte secret key."""
    check_key(secret_key, 64, "secret key")
    return nacl.bindings.crypto_sign(message, secret_key)[:64]


def verify(message: bytes, signature: bytes, public_key: bytes) -> bool:
    """True if `signature` is a valid Ed25519 signature of `message` by `public_key`."""
    if len(signature) != 64 or len(public_key) != 32:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def check_key(data: object, size: int, what: str) -> bytes:
    """`data` as bytes if it is `size` bytes long, else InvalidKeyError naming `what`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidKeyError(f"{what} must be {size} bytes, got {type(data).__name__}")
    if len(data) != size:
        raise InvalidKeyError(f"{what} must be {size} bytes, got {len(data)}")
    return bytes(data)
