"""Hypercore manifests: who signs a core, normalisation, encodings v0/v1/v2, and the core key.

See `shared/spec/core-crypto.md` §6 (hypercore `lib/verifier.js` `createManifest`,
`lib/messages.js` `manifest`/`manifestv0`). The core key is `manifest_hash(manifest)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hyperfs.core import caps
from hyperfs.core.crypto import check_key, hash32
from hyperfs.core.encoding import Decoder, Encoder
from hyperfs.errors import DecodingError, InvalidArgumentError

_FLAG_ALLOW_PATCH = 1
_FLAG_PROLOGUE = 2
_FLAG_LINKED = 4
_FLAG_USER_DATA = 8


@dataclass(frozen=True)
class Signer:
    """One ed25519 signer: its public key and the namespace mixed into v0 signables."""

    public_key: bytes
    namespace: bytes = caps.DEFAULT_NAMESPACE
    signature: str = "ed25519"


@dataclass(frozen=True)
class Prologue:
    """A static prefix: the tree hash the core has at `length`, valid without a signature."""

    hash: bytes
    length: int


@dataclass(frozen=True)
class Manifest:
    """A normalised manifest (build one with `create_manifest`)."""

    version: int
    quorum: int
    signers: tuple[Signer, ...]
    allow_patch: bool = False
    prologue: Prologue | None = None
    linked: tuple[bytes, ...] | None = None
    user_data: bytes | None = None
    hash: str = "blake2b"


def create_manifest(
    signers: list[Signer | bytes] | tuple[Signer | bytes, ...] = (),
    *,
    version: int | None = None,
    quorum: int | None = None,
    allow_patch: bool = False,
    prologue: Prologue | None = None,
    linked: list[bytes] | None = None,
    user_data: bytes | None = None,
    hash: str = "blake2b",
) -> Manifest:
    """Normalise a manifest as `createManifest` does (a bare 32-byte key is one signer)."""
    if hash != "blake2b":
        raise InvalidArgumentError(f"unsupported manifest hash {hash!r}; only blake2b")
    norm = tuple(
        Signer(check_key(s, 32, "signer public key")) if not isinstance(s, Signer) else _check_signer(s)
        for s in signers
    )
    if quorum is None:
        quorum = len(norm) // 2 + 1 if norm else 0
    if quorum < 0 or quorum > len(norm):
        raise InvalidArgumentError(f"quorum {quorum} is outside 0..{len(norm)} signers")
    if version is None:
        version = 2 if linked or user_data is not None else 1
    if prologue is not None:
        prologue = Prologue(check_key(prologue.hash, 32, "prologue hash"), prologue.length)
    return Manifest(
        version=version,
        quorum=quorum,
        signers=norm,
        allow_patch=bool(allow_patch),
        prologue=prologue,
        linked=tuple(check_key(k, 32, "linked key") for k in linked) if linked else None,
        user_data=user_data,
    )


def _check_signer(signer: Signer) -> Signer:
    if signer.signature != "ed25519":
        raise InvalidArgumentError(f"unsupported signature scheme {signer.signature!r}")
    check_key(signer.public_key, 32, "signer public key")
    check_key(signer.namespace, 32, "signer namespace")
    return signer


def default_signer_manifest(public_key: bytes) -> Manifest:
    """The manifest of `new Hypercore(dir, {keyPair})` and of every Corestore core."""
    return create_manifest([public_key], version=1, quorum=1)


def manifest_hash(manifest: Manifest) -> bytes:
    """The core key: `B(MANIFEST || encode(manifest))`."""
    return hash32(caps.MANIFEST, encode_manifest(manifest))


def core_key(manifest_or_key: Manifest | bytes, compat: bool = False) -> bytes:
    """`Hypercore.key(x)`: a 32-byte public key is wrapped as one default signer first."""
    if isinstance(manifest_or_key, Manifest):
        manifest = manifest_or_key
    else:
        manifest = create_manifest([check_key(manifest_or_key, 32, "public key")])
    if compat:
        return manifest.signers[0].public_key
    return manifest_hash(manifest)


# --- encoding ----------------------------------------------------------------------------------


def _encode_signer(enc: Encoder, signer: Signer) -> None:
    enc.uint(0).fixed32(signer.namespace).fixed32(signer.public_key)


def _decode_signer(dec: Decoder) -> Signer:
    kind = dec.uint()
    if kind != 0:
        raise DecodingError(f"unknown manifest signature type {kind}")
    namespace = dec.fixed32()
    return Signer(dec.fixed32(), namespace)


def encode_manifest(manifest: Manifest) -> bytes:
    """The compact encoding of a manifest (the legacy layout for version 0)."""
    enc = Encoder()
    if manifest.version == 0:
        _encode_v0(enc, manifest)
        return enc.getvalue()
    flags = 0
    if manifest.allow_patch:
        flags |= _FLAG_ALLOW_PATCH
    if manifest.prologue is not None:
        flags |= _FLAG_PROLOGUE
    if manifest.linked:
        flags |= _FLAG_LINKED
    if manifest.user_data is not None:
        flags |= _FLAG_USER_DATA
    enc.uint(manifest.version).uint(flags).uint(0).uint(manifest.quorum)
    enc.array(list(manifest.signers), _encode_signer)
    if manifest.prologue is not None:
        enc.fixed32(manifest.prologue.hash).uint(manifest.prologue.length)
    if manifest.linked:
        enc.array(list(manifest.linked), Encoder.fixed32)
    if manifest.user_data is not None:
        enc.buffer(manifest.user_data)
    return enc.getvalue()


def _encode_v0(enc: Encoder, manifest: Manifest) -> None:
    enc.uint(0).uint(0)
    if manifest.prologue is not None and not manifest.signers:
        enc.uint(0).fixed32(manifest.prologue.hash)
    elif manifest.quorum == 1 and len(manifest.signers) == 1 and not manifest.allow_patch:
        enc.uint(1)
        _encode_signer(enc, manifest.signers[0])
    else:
        enc.uint(2).uint(_FLAG_ALLOW_PATCH if manifest.allow_patch else 0).uint(manifest.quorum)
        enc.array(list(manifest.signers), _encode_signer)


def decode_manifest(data: bytes) -> Manifest:
    """Parse an encoded manifest; DecodingError on anything malformed or trailing."""
    dec = Decoder(data)
    version = dec.uint()
    if version == 0:
        manifest = _decode_v0(dec)
    elif version > 2:
        raise DecodingError(f"unknown manifest version {version}")
    else:
        flags = dec.uint()
        if dec.uint() != 0:
            raise DecodingError("unknown manifest hash type")
        quorum = dec.uint()
        signers = tuple(dec.array(_decode_signer))
        prologue = Prologue(dec.fixed32(), dec.uint()) if flags & _FLAG_PROLOGUE else None
        linked = tuple(dec.array(Decoder.fixed32)) if flags & _FLAG_LINKED else None
        user_data = dec.buffer() if flags & _FLAG_USER_DATA else None
        manifest = Manifest(
            version, quorum, signers, bool(flags & _FLAG_ALLOW_PATCH), prologue, linked, user_data
        )
    dec.expect_end()
    if manifest.quorum > len(manifest.signers):
        raise DecodingError(f"manifest quorum {manifest.quorum} exceeds {len(manifest.signers)} signers")
    return manifest


def _decode_v0(dec: Decoder) -> Manifest:
    if dec.uint() != 0:
        raise DecodingError("unknown manifest hash type")
    kind = dec.uint()
    if kind == 0:
        return Manifest(0, 0, (), prologue=Prologue(dec.fixed32(), 0))
    if kind == 1:
        return Manifest(0, 1, (_decode_signer(dec),))
    if kind == 2:
        flags = dec.uint()
        quorum = dec.uint()
        return Manifest(0, quorum, tuple(dec.array(_decode_signer)), bool(flags & _FLAG_ALLOW_PATCH))
    raise DecodingError(f"unknown version-0 manifest type {kind}")


# --- JSON-ish form (the vectors, `info()`) ----------------------------------------------------


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """The JS object form of a manifest, bytes as lowercase hex."""
    return {
        "version": manifest.version,
        "hash": manifest.hash,
        "allowPatch": manifest.allow_patch,
        "quorum": manifest.quorum,
        "signers": [
            {"signature": s.signature, "namespace": s.namespace.hex(), "publicKey": s.public_key.hex()}
            for s in manifest.signers
        ],
        "prologue": (
            {"hash": manifest.prologue.hash.hex(), "length": manifest.prologue.length}
            if manifest.prologue
            else None
        ),
        "linked": [k.hex() for k in manifest.linked] if manifest.linked else None,
        "userData": manifest.user_data.hex() if manifest.user_data is not None else None,
    }


def manifest_from_dict(obj: dict[str, Any]) -> Manifest:
    """Inverse of `manifest_to_dict` (normalising as `create_manifest` does)."""
    prologue = obj.get("prologue")
    return create_manifest(
        [
            Signer(
                bytes.fromhex(s["publicKey"]),
                bytes.fromhex(s["namespace"]) if s.get("namespace") else caps.DEFAULT_NAMESPACE,
            )
            for s in obj.get("signers", [])
        ],
        version=obj.get("version"),
        quorum=obj.get("quorum"),
        allow_patch=obj.get("allowPatch", False),
        prologue=Prologue(bytes.fromhex(prologue["hash"]), prologue["length"]) if prologue else None,
        linked=[bytes.fromhex(k) for k in obj["linked"]] if obj.get("linked") else None,
        user_data=bytes.fromhex(obj["userData"]) if obj.get("userData") is not None else None,
    )
