"""The Hypercore replication channel's messages: the open handshake and the ten message types.

Byte for byte as hypercore 11 `lib/messages.js` (`wire.*`), see `shared/spec/wire.md` §4.1, §4.3.
`encode(msg)` gives a message's payload (without Protomux's channel and type header);
`decode(type, payload)` parses one and raises `DecodingError` on bad bytes. Trailing bytes after
the last field are ignored, as JS does (protomux hands each message its own bounds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from hyperfs.core.encoding import Decoder, Encoder, TreeNode
from hyperfs.errors import DecodingError

PROTOCOL = "hypercore/alpha"

# noData reasons (replicator.js)
NOT_AVAILABLE = 1
INVALID_REQUEST = 2


def _nodes(dec: Decoder) -> list[TreeNode]:
    return dec.array(Decoder.tree_node)


def _flags(*bits: bool) -> int:
    """A flags uint from booleans, bit 0 first."""
    return sum(1 << i for i, bit in enumerate(bits) if bit)


def _trailing_flags(dec: Decoder) -> int:
    # Optional trailing flags are only present when non-zero (wire.md §1).
    return dec.uint() if not dec.done() else 0


@dataclass(slots=True)
class Handshake:
    """The channel's open payload: flags (bit 0: seeks) and the replication capability."""

    capability: bytes
    seeks: bool = True

    def encode(self) -> bytes:
        return Encoder().uint(1 if self.seeks else 0).fixed32(self.capability).getvalue()

    @staticmethod
    def decode(payload: bytes) -> Handshake:
        dec = Decoder(payload)
        flags = dec.uint()
        return Handshake(capability=dec.fixed32(), seeks=bool(flags & 1))


@dataclass(slots=True)
class Sync:
    TYPE: ClassVar[int] = 0
    fork: int = 0
    length: int = 0
    remote_length: int = 0
    can_upgrade: bool = True
    uploading: bool = True
    downloading: bool = True
    has_manifest: bool = False
    allow_push: bool = False

    def encode_into(self, enc: Encoder) -> None:
        flags = _flags(self.can_upgrade, self.uploading, self.downloading, self.has_manifest, self.allow_push)
        enc.uint(flags).uint(self.fork).uint(self.length).uint(self.remote_length)

    @staticmethod
    def decode_from(dec: Decoder) -> Sync:
        flags = dec.uint()
        return Sync(
            fork=dec.uint(),
            length=dec.uint(),
            remote_length=dec.uint(),
            can_upgrade=bool(flags & 1),
            uploading=bool(flags & 2),
            downloading=bool(flags & 4),
            has_manifest=bool(flags & 8),
            allow_push=bool(flags & 16),
        )


@dataclass(slots=True, frozen=True)
class IndexNodes:
    """A `block` or `hash` request: the index and how many tree nodes up the proof should climb."""

    index: int
    nodes: int


@dataclass(slots=True, frozen=True)
class SeekRequest:
    bytes: int
    padding: int = 0


@dataclass(slots=True, frozen=True)
class UpgradeRequest:
    start: int
    length: int


@dataclass(slots=True)
class Request:
    TYPE: ClassVar[int] = 1
    id: int
    fork: int = 0
    block: IndexNodes | None = None
    hash: IndexNodes | None = None
    seek: SeekRequest | None = None
    upgrade: UpgradeRequest | None = None
    manifest: bool = False
    priority: int = 0

    def encode_into(self, enc: Encoder) -> None:
        flags = _flags(
            self.block is not None,
            self.hash is not None,
            self.seek is not None,
            self.upgrade is not None,
            self.manifest,
            self.priority != 0,
        )
        enc.uint(flags).uint(self.id).uint(self.fork)
        for part in (self.block, self.hash):
            if part is not None:
                enc.uint(part.index).uint(part.nodes)
        if self.seek is not None:
            enc.uint(self.seek.bytes).uint(self.seek.padding)
        if self.upgrade is not None:
            enc.uint(self.upgrade.start).uint(self.upgrade.length)
        if self.priority:
            enc.uint(self.priority)

    @staticmethod
    def decode_from(dec: Decoder) -> Request:
        flags = dec.uint()
        req = Request(id=dec.uint(), fork=dec.uint())
        if flags & 1:
            req.block = IndexNodes(dec.uint(), dec.uint())
        if flags & 2:
            req.hash = IndexNodes(dec.uint(), dec.uint())
        if flags & 4:
            req.seek = SeekRequest(dec.uint(), dec.uint())
        if flags & 8:
            req.upgrade = UpgradeRequest(dec.uint(), dec.uint())
        req.manifest = bool(flags & 16)
        if flags & 32:
            req.priority = dec.uint()
        return req


@dataclass(slots=True)
class Cancel:
    TYPE: ClassVar[int] = 2
    request: int

    def encode_into(self, enc: Encoder) -> None:
        enc.uint(self.request)

    @staticmethod
    def decode_from(dec: Decoder) -> Cancel:
        return Cancel(dec.uint())


@dataclass(slots=True)
class DataBlock:
    index: int
    value: bytes
    nodes: list[TreeNode] = field(default_factory=list)


@dataclass(slots=True)
class DataHash:
    index: int
    nodes: list[TreeNode] = field(default_factory=list)


@dataclass(slots=True)
class DataSeek:
    bytes: int
    nodes: list[TreeNode] = field(default_factory=list)


@dataclass(slots=True)
class DataUpgrade:
    start: int
    length: int
    nodes: list[TreeNode] = field(default_factory=list)
    additional_nodes: list[TreeNode] = field(default_factory=list)
    signature: bytes | None = None


@dataclass(slots=True)
class Data:
    """A proof answering request `request`. `manifest` is the encoded manifest (runs to the end)."""

    TYPE: ClassVar[int] = 3
    request: int
    fork: int = 0
    block: DataBlock | None = None
    hash: DataHash | None = None
    seek: DataSeek | None = None
    upgrade: DataUpgrade | None = None
    manifest: bytes | None = None

    def encode_into(self, enc: Encoder) -> None:
        flags = _flags(
            self.block is not None,
            self.hash is not None,
            self.seek is not None,
            self.upgrade is not None,
            self.manifest is not None,
        )
        enc.uint(flags).uint(self.request).uint(self.fork)
        if self.block is not None:
            enc.uint(self.block.index).buffer(self.block.value).array(self.block.nodes, Encoder.tree_node)
        if self.hash is not None:
            enc.uint(self.hash.index).array(self.hash.nodes, Encoder.tree_node)
        if self.seek is not None:
            enc.uint(self.seek.bytes).array(self.seek.nodes, Encoder.tree_node)
        if self.upgrade is not None:
            up = self.upgrade
            enc.uint(up.start).uint(up.length).array(up.nodes, Encoder.tree_node)
            enc.array(up.additional_nodes, Encoder.tree_node)
            enc.optional_buffer(up.signature)
        if self.manifest is not None:
            enc.raw(self.manifest)

    @staticmethod
    def decode_from(dec: Decoder) -> Data:
        flags = dec.uint()
        data = Data(request=dec.uint(), fork=dec.uint())
        if flags & 1:
            data.block = DataBlock(dec.uint(), dec.buffer(), _nodes(dec))
        if flags & 2:
            data.hash = DataHash(dec.uint(), _nodes(dec))
        if flags & 4:
            data.seek = DataSeek(dec.uint(), _nodes(dec))
        if flags & 8:
            data.upgrade = DataUpgrade(dec.uint(), dec.uint(), _nodes(dec), _nodes(dec), dec.optional_buffer())
        if flags & 16:
            data.manifest = dec.raw()
            if not data.manifest:
                raise DecodingError("data message flags a manifest but carries none")
        return data


@dataclass(slots=True)
class NoData:
    TYPE: ClassVar[int] = 4
    request: int
    reason: int = 0

    def encode_into(self, enc: Encoder) -> None:
        # JS always writes the flags uint (0 or 1), and the reason only when flagged.
        enc.uint(self.request).uint(1 if self.reason else 0)
        if self.reason:
            enc.uint(self.reason)

    @staticmethod
    def decode_from(dec: Decoder) -> NoData:
        request = dec.uint()
        flags = _trailing_flags(dec)
        return NoData(request, dec.uint() if flags & 1 else 0)


@dataclass(slots=True)
class Want:
    TYPE: ClassVar[int] = 5
    start: int
    length: int
    any: bool = False

    def encode_into(self, enc: Encoder) -> None:
        enc.uint(self.start).uint(self.length)
        if self.any:
            enc.uint(1)

    @classmethod
    def decode_from(cls, dec: Decoder) -> Want:
        start, length = dec.uint(), dec.uint()
        return cls(start, length, bool(_trailing_flags(dec) & 1))


@dataclass(slots=True)
class Unwant(Want):
    TYPE: ClassVar[int] = 6


@dataclass(slots=True)
class Bitfield:
    """Blocks `start + 32*w + j` the sender has, bit j (LSB first) of word w; start is a multiple of 32."""

    TYPE: ClassVar[int] = 7
    start: int
    bitfield: list[int]

    def encode_into(self, enc: Encoder) -> None:
        enc.uint(self.start).uint32_array(self.bitfield)

    @staticmethod
    def decode_from(dec: Decoder) -> Bitfield:
        return Bitfield(dec.uint(), dec.uint32_array())


@dataclass(slots=True)
class Range:
    """The sender has (drop=False) or no longer has (drop=True) blocks [start, start+length)."""

    TYPE: ClassVar[int] = 8
    start: int
    length: int
    drop: bool = False

    def encode_into(self, enc: Encoder) -> None:
        enc.uint(self.drop | (self.length == 1) << 1).uint(self.start)
        if self.length != 1:
            enc.uint(self.length)

    @staticmethod
    def decode_from(dec: Decoder) -> Range:
        flags = dec.uint()
        start = dec.uint()
        length = 1 if flags & 2 else dec.uint()
        return Range(start, length, bool(flags & 1))


@dataclass(slots=True)
class Extension:
    TYPE: ClassVar[int] = 9
    name: str
    message: bytes

    def encode_into(self, enc: Encoder) -> None:
        enc.string(self.name).raw(self.message)

    @staticmethod
    def decode_from(dec: Decoder) -> Extension:
        return Extension(dec.string(), dec.raw())


Message = Sync | Request | Cancel | Data | NoData | Want | Unwant | Bitfield | Range | Extension

MESSAGE_TYPES: tuple[type, ...] = (Sync, Request, Cancel, Data, NoData, Want, Unwant, Bitfield, Range, Extension)


def encode(msg: Message) -> bytes:
    """The payload of one channel message (Protomux adds the channel id and `msg.TYPE`)."""
    enc = Encoder()
    msg.encode_into(enc)
    return enc.getvalue()


def decode(msg_type: int, payload: bytes | bytearray | memoryview) -> Message:
    """Parse the payload of channel message `msg_type`; DecodingError on bad bytes or type."""
    if not 0 <= msg_type < len(MESSAGE_TYPES):
        raise DecodingError(f"unknown hypercore message type {msg_type}")
    return MESSAGE_TYPES[msg_type].decode_from(Decoder(payload))
