"""Signing and verifying a core's head per its manifest (hypercore `lib/verifier.js`, `multisig.js`).

The stored signature of a version >= 1 manifest is a multiSignature (68 bytes for one signer);
version-0 manifests and compat cores (key = public key) store the raw 64-byte Ed25519 signature.
See `shared/spec/core-crypto.md` §7.
"""

from __future__ import annotations

from typing import NamedTuple

from hyperfs.core import caps
from hyperfs.core.crypto import sign, verify
from hyperfs.core.encoding import Decoder, Encoder, TreeNode
from hyperfs.core.manifest import Manifest
from hyperfs.errors import DecodingError, InvalidArgumentError, NotWritableError


class SignerProof(NamedTuple):
    signer: int
    signature: bytes
    patch: int = 0


class MultiSignature(NamedTuple):
    proofs: list[SignerProof]
    patch: list[TreeNode]


def encode_multisig(multisig: MultiSignature) -> bytes:
    enc = Encoder()
    enc.uint(len(multisig.proofs))
    for proof in multisig.proofs:
        enc.uint(proof.signer).fixed64(proof.signature).uint(proof.patch)
    enc.array(multisig.patch, Encoder.tree_node)
    return enc.getvalue()


def decode_multisig(data: bytes) -> MultiSignature:
    """Parse a multiSignature; DecodingError on malformed or trailing bytes."""
    dec = Decoder(data)
    proofs = dec.array(lambda d: SignerProof(d.uint(), d.fixed64(), d.uint()))
    patch = dec.array(Decoder.tree_node)
    dec.expect_end()
    return MultiSignature(proofs, patch)


def signable(manifest: Manifest | None, key: bytes, tree_hash: bytes, length: int, fork: int) -> bytes:
    """What the signers sign for a head: compat (no manifest or key = signer), v0 or v1+ layout."""
    if manifest is None or is_compat(manifest, key):
        return caps.tree_signable_compat(tree_hash, length, fork)
    if manifest.version == 0:
        return caps.tree_signable(manifest.signers[0].namespace, tree_hash, length, fork)
    return caps.tree_signable(key, tree_hash, length, fork)


def is_compat(manifest: Manifest, key: bytes) -> bool:
    """A compat (pre-manifest) core: its key is its single signer's public key."""
    return len(manifest.signers) == 1 and manifest.signers[0].public_key == key


def sign_head(
    manifest: Manifest, key: bytes, secret_key: bytes | None, tree_hash: bytes, length: int, fork: int
) -> bytes:
    """The stored signature of a head signed by a single-signer writer."""
    if secret_key is None:
        raise NotWritableError("this core has no secret key: it cannot sign")
    if len(manifest.signers) != 1:
        raise InvalidArgumentError("only single-signer cores can be signed locally")
    raw = sign(signable(manifest, key, tree_hash, length, fork), secret_key)
    if manifest.version == 0 or is_compat(manifest, key):
        return raw
    return encode_multisig(MultiSignature([SignerProof(0, raw)], []))


def verify_head(
    manifest: Manifest | None,
    key: bytes,
    tree_hash: bytes,
    length: int,
    fork: int,
    signature: bytes | None,
) -> bool:
    """True if `signature` (as stored) is a valid head signature for this core."""
    if manifest is None:
        return False
    prologue = manifest.prologue
    if prologue is not None and length <= prologue.length:
        return length == prologue.length and tree_hash == prologue.hash
    if not signature:
        return False
    message = signable(manifest, key, tree_hash, length, fork)
    if manifest.version == 0 or is_compat(manifest, key):
        if len(manifest.signers) != 1:
            return False
        return verify(message, signature, manifest.signers[0].public_key)
    try:
        multisig = decode_multisig(signature)
    except DecodingError:
        return False
    if len(multisig.proofs) < manifest.quorum or manifest.quorum == 0:
        return False
    seen: set[int] = set()
    for proof in multisig.proofs:
        # Patched proofs sign an older tree; we never produce them and do not accept them.
        if proof.patch or proof.signer in seen or proof.signer >= len(manifest.signers):
            return False
        seen.add(proof.signer)
        if not verify(message, proof.signature, manifest.signers[proof.signer].public_key):
            return False
    return True
