"""The values hypercore-storage 1.9.6 keeps (`spec/hyperschema`), as dataclasses with codecs.

Each record type has `encode_<name>(record) -> bytes` (the 1.9.6 bytes) and
`decode_<name>(data) -> record`. Decoders also read what hypercore-storage 3.x writes where it
extended a 1.9.6 value (store head version 2, a head's trailing flags and timestamp, the extra
hints flags, a manifest's userData). `decode_value` turns a decoding failure into a
`CorruptStorageError` that names the value being read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from hyperfs.core.crypto import KeyPair
from hyperfs.core.encoding import Decoder, Encoder
from hyperfs.core.manifest import Manifest, Prologue, Signer
from hyperfs.errors import CorruptStorageError, DecodingError, InvalidKeyError

T = TypeVar("T")

STORE_VERSION = 1
"""The store head and core record version hypercore-storage 1.9.6 writes."""

SIGNATURE_ED25519 = "ed25519"


@dataclass
class Allocated:
    """How many core and data pointers the store has handed out."""

    cores: int = 0
    datas: int = 0


@dataclass
class StoreHead:
    """`@corestore/head`: the store's version, pointer allocation, seed and default core."""

    version: int = STORE_VERSION
    allocated: Allocated = field(default_factory=Allocated)
    seed: bytes | None = None
    default_discovery_key: bytes | None = None


@dataclass(frozen=True)
class Alias:
    """`@corestore/alias`: a named core inside a 32-byte namespace."""

    name: str
    namespace: bytes


@dataclass(frozen=True)
class CoreRecord:
    """`@corestore/core`: where a core's state lives (stored under its discovery key)."""

    version: int
    core_pointer: int
    data_pointer: int
    alias: Alias | None = None


@dataclass(frozen=True)
class Auth:
    """`@core/auth`: a core's key, discovery key and what it needs to verify, sign, decrypt."""

    key: bytes
    discovery_key: bytes
    manifest: Manifest | None = None  # stored in the version-1 layout whatever its version
    key_pair: KeyPair | None = None
    encryption_key: bytes | None = None


@dataclass(frozen=True)
class Head:
    """`@core/head`: the signed head. `timestamp` only comes from hypercore-storage 3.x."""

    fork: int
    length: int
    root_hash: bytes
    signature: bytes | None
    timestamp: int | None = None


@dataclass(frozen=True)
class Hints:
    """`@core/hints`. The last two fields only come from hypercore-storage 3.x."""

    contiguous_length: int = 0
    remote_contiguous_length: int = 0
    recovering: bool = False


@dataclass(frozen=True)
class Session:
    """`@core/session`: a named session's data pointer."""

    name: str
    data_pointer: int


@dataclass(frozen=True)
class Dependency:
    """`@core/dependency`: read blocks/tree nodes below `length` from `data_pointer`."""

    data_pointer: int
    length: int


# --- codecs ----------------------------------------------------------------------------------


def decode_value(what: str, decode: Callable[[bytes], T], data: bytes) -> T:
    """Decode a stored value; bad bytes raise CorruptStorageError naming `what`."""
    try:
        return decode(data)
    except (DecodingError, InvalidKeyError) as err:
        raise CorruptStorageError(f"corrupt {what} in storage: {err}") from None


def _optional32(enc: Encoder, value: bytes | None) -> None:
    if value is not None:
        enc.fixed32(value)


def encode_store_head(head: StoreHead) -> bytes:
    flags = 1 | (2 if head.seed else 0) | (4 if head.default_discovery_key else 0)
    enc = Encoder().uint(head.version).uint(flags)
    enc.uint(head.allocated.cores).uint(head.allocated.datas)
    _optional32(enc, head.seed or None)
    _optional32(enc, head.default_discovery_key or None)
    return enc.getvalue()


def decode_store_head(data: bytes) -> StoreHead:
    dec = Decoder(data)
    version = dec.uint()
    if version >= 2:
        # hypercore-storage 3.x: version, cores, datas, groups, flags{1 seed, 2 dkey}, seed?, dkey?
        allocated = Allocated(dec.uint(), dec.uint())
        dec.uint()  # groups: a 3.x feature we do not keep
        flags = dec.uint()
        seed = dec.fixed32() if flags & 1 else None
        dkey = dec.fixed32() if flags & 2 else None
        return StoreHead(version, allocated, seed, dkey)
    flags = dec.uint()
    allocated = Allocated(dec.uint(), dec.uint()) if flags & 1 else Allocated()
    seed = dec.fixed32() if flags & 2 else None
    dkey = dec.fixed32() if flags & 4 else None
    return StoreHead(version, allocated, seed, dkey)


def encode_core_record(record: CoreRecord) -> bytes:
    enc = Encoder().uint(record.version).uint(record.core_pointer).uint(record.data_pointer)
    enc.uint(1 if record.alias else 0)
    if record.alias:
        enc.string(record.alias.name).fixed32(record.alias.namespace)
    return enc.getvalue()


def decode_core_record(data: bytes) -> CoreRecord:
    dec = Decoder(data)
    version, core_pointer, data_pointer, flags = dec.uint(), dec.uint(), dec.uint(), dec.uint()
    alias = Alias(dec.string(), dec.fixed32()) if flags & 1 else None
    return CoreRecord(version, core_pointer, data_pointer, alias)


def _encode_manifest(enc: Encoder, m: Manifest) -> None:
    flags = (1 if m.allow_patch else 0) | (2 if m.prologue else 0) | (4 if m.linked is not None else 0)
    flags |= 8 if m.user_data is not None else 0  # as hypercore-storage 3.x: 1.9.6 has no user data
    enc.uint(m.version).uint(flags)
    enc.uint(0)  # hash enum: blake2b is the only one
    enc.uint(m.quorum)
    enc.uint(len(m.signers))
    for signer in m.signers:
        enc.uint(0).fixed32(signer.namespace).fixed32(signer.public_key)  # ed25519
    if m.prologue:
        enc.fixed32(m.prologue.hash).uint(m.prologue.length)
    if m.linked is not None:
        enc.uint(len(m.linked))
        for key in m.linked:
            enc.fixed32(key)
    if m.user_data is not None:
        enc.buffer(m.user_data)


def _decode_signer(dec: Decoder) -> Signer:
    signature = SIGNATURE_ED25519 if dec.uint() == 0 else None  # None: an enum value we do not know
    namespace = dec.fixed32()
    return Signer(dec.fixed32(), namespace, signature)  # type: ignore[arg-type]  (Hypercore rejects None)


def _decode_manifest(data: bytes) -> Manifest:
    dec = Decoder(data)
    version, flags = dec.uint(), dec.uint()
    dec.uint()  # hash enum: blake2b is the only one
    quorum = dec.uint()
    signers = tuple(dec.array(_decode_signer))
    prologue = Prologue(dec.fixed32(), dec.uint()) if flags & 2 else None
    linked = tuple(dec.array(Decoder.fixed32)) if flags & 4 else None
    user_data = dec.buffer() if flags & 8 else None
    return Manifest(version, quorum, signers, bool(flags & 1), prologue, linked, user_data)


def encode_auth(auth: Auth) -> bytes:
    flags = (1 if auth.manifest else 0) | (2 if auth.key_pair else 0) | (4 if auth.encryption_key else 0)
    enc = Encoder().fixed32(auth.key).fixed32(auth.discovery_key).uint(flags)
    if auth.manifest:
        inner = Encoder()
        _encode_manifest(inner, auth.manifest)
        enc.buffer(inner.buf)  # c.frame: length-prefixed
    if auth.key_pair:
        enc.buffer(auth.key_pair.public_key).optional_buffer(auth.key_pair.secret_key)
    if auth.encryption_key:
        enc.buffer(auth.encryption_key)
    return enc.getvalue()


def decode_auth(data: bytes) -> Auth:
    dec = Decoder(data)
    key, discovery_key, flags = dec.fixed32(), dec.fixed32(), dec.uint()
    manifest = _decode_manifest(dec.buffer()) if flags & 1 else None
    key_pair = KeyPair(dec.buffer(), dec.optional_buffer()) if flags & 2 else None
    encryption_key = dec.optional_buffer() if flags & 4 else None
    return Auth(key, discovery_key, manifest, key_pair, encryption_key)


def encode_head(head: Head) -> bytes:
    enc = Encoder().uint(head.fork).uint(head.length).fixed32(head.root_hash)
    return enc.optional_buffer(head.signature).getvalue()


def decode_head(data: bytes) -> Head:
    dec = Decoder(data)
    fork, length, root_hash, signature = dec.uint(), dec.uint(), dec.fixed32(), dec.optional_buffer()
    timestamp = None
    if not dec.done():  # hypercore-storage 3.x: flags{1 timestamp}, timestamp?
        if dec.uint() & 1:
            timestamp = dec.uint64()
    return Head(fork, length, root_hash, signature, timestamp)


def encode_hints(hints: Hints) -> bytes:
    if not hints.contiguous_length:
        return b"\x00"
    return Encoder().uint(1).uint(hints.contiguous_length).getvalue()


def decode_hints(data: bytes) -> Hints:
    dec = Decoder(data)
    flags = dec.uint()
    contiguous = dec.uint() if flags & 1 else 0
    remote = dec.uint() if flags & 2 else 0
    return Hints(contiguous, remote, bool(flags & 4))


def encode_sessions(sessions: list[Session]) -> bytes:
    enc = Encoder().uint(len(sessions))
    for session in sessions:
        enc.string(session.name).uint(session.data_pointer)
    return enc.getvalue()


def decode_sessions(data: bytes) -> list[Session]:
    return Decoder(data).array(lambda dec: Session(dec.string(), dec.uint()))


def encode_dependency(dep: Dependency) -> bytes:
    return Encoder().uint(dep.data_pointer).uint(dep.length).getvalue()


def decode_dependency(data: bytes) -> Dependency:
    dec = Decoder(data)
    return Dependency(dec.uint(), dec.uint())
