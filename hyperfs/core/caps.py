"""Hypercore 11 capabilities: the six `namespace('hypercore', 6)` constants and the signables.

See `shared/spec/core-crypto.md` §5 and §7 (hypercore `lib/caps.js`).
"""

from __future__ import annotations

from hyperfs.core.crypto import check_key, keyed_hash32, namespace
from hyperfs.core.encoding import u64le

(
    TREE,
    REPLICATE_INITIATOR,
    REPLICATE_RESPONDER,
    MANIFEST,
    DEFAULT_NAMESPACE,
    DEFAULT_ENCRYPTION,
) = namespace("hypercore", 6)


def replicate_capability(is_initiator: bool, key: bytes, handshake_hash: bytes) -> bytes:
    """The capability a peer sends to prove it knows `key` on this Noise session."""
    prefix = REPLICATE_INITIATOR if is_initiator else REPLICATE_RESPONDER
    return keyed_hash32(handshake_hash, prefix, check_key(key, 32, "core key"))


def tree_signable(manifest_hash: bytes, tree_hash: bytes, length: int, fork: int) -> bytes:
    """The 112-byte signable of a non-compat head (manifest version >= 1).

    A version-0 manifest passes its signer namespace as `manifest_hash` (§7.2)."""
    return TREE + manifest_hash + tree_hash + u64le(length) + u64le(fork)


def tree_signable_compat(tree_hash: bytes, length: int, fork: int, legacy: bool = False) -> bytes:
    """The 80-byte signable of a compat core (key = public key); 48 bytes without TREE (`legacy`)."""
    body = tree_hash + u64le(length) + u64le(fork)
    return body if legacy else TREE + body
