"""The append-tree 2.4 index: a path tree stored as one `Node` per log entry.

Every `Node` carries `paths`, an index of the tree as its writer saw it: for each depth `i` of the
node's name, the sequence numbers of one representative node per child name of the folder
`names[:i]` (the newest node in that child's subtree). Encoded as append-tree does: a header
varint (bit 0: every list ends with the node's own sequence number, which is then left out),
then per depth a varint count and varint deltas of the ascending sequence numbers.

`AppendTree` is the tree at one head, over a `read(seq) -> bytes` of the log. It follows
append-tree's algorithms step for step (so the bytes it writes are hyperdrive 9's), but keeps
the listing of every folder it has resolved, keyed by child name, so a lookup costs one dict
step per path component instead of a walk from the head. That cache is derived from the log and
rebuilt from it; it is never the source of truth.
"""

from __future__ import annotations

import itertools
import operator
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError

from hyperfs.drive import schema_pb2
from hyperfs.drive.folder_index import FolderIndex
from hyperfs.errors import DecodingError, ReadOnlyDriveError

Names = tuple[str, ...]
MAX_VARINT_BYTES = 10  # a uint64; longer runs are corrupt, not big numbers
# What the decoded nodes a tree keeps may weigh (`NodeCache`): every node of a drive of ~20,000
# entries in narrow folders (the CPython stdlib's 7,733 take 6 MB), while a folder of 40,000
# entries, whose nodes each index all of them (20 KB apiece, 800 MB in all), no longer keeps
# a mount at 900 MB after one `ls -l`.
NODE_CACHE_BYTES = 16 * 1024 * 1024
_NODE_OVERHEAD = 400  # bytes of Python objects around a node's strings and bytes
# And its listings: a put caches one for each folder on the way and for the entry itself,
# ~0.8 KB an entry, so each untar of the stdlib into a mount grew it by 8 MB for good.
LISTING_CACHE_BYTES = 16 * 1024 * 1024
_LISTING_OVERHEAD, _LISTING_ENTRY = 600, 100  # bytes of a listing, and of each entry in it


def split(name: str) -> Names:
    """append-tree's split: components of `name`, a leading and a trailing '/' ignored."""
    parts = name.split("/")
    if parts and parts[0] == "":
        parts.pop(0)
    if parts and parts[-1] == "":
        parts.pop()
    return tuple(parts)


def join(names: Sequence[str]) -> str:
    return "/" + "/".join(names)


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """How many leading components `a` and `b` share."""
    i = 0
    n = min(len(a), len(b))
    while i < n and a[i] == b[i]:
        i += 1
    return i


# --- paths encoding ---------------------------------------------------------------------------


def _put_varint(n: int, out: bytearray) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _get_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    end = min(len(buf), pos + MAX_VARINT_BYTES)
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise DecodingError("append-tree paths: truncated or overlong varint")


def encode_deltas(seqs: Iterable[int], out: bytearray) -> None:
    """Appends the varint deltas of the ascending `seqs` (the first one absolute)."""
    values = list(seqs)
    deltas = list(map(operator.sub, values, [0, *values[:-1]]))
    # Most deltas take one byte (a folder's entries are mostly written together): those go out
    # in runs, and only the few larger ones one at a time (all found without a Python loop).
    start = 0
    for big in itertools.compress(itertools.count(), map((0x7F).__lt__, deltas)):
        out += bytes(deltas[start:big])
        _put_varint(deltas[big], out)
        start = big + 1
    out += bytes(deltas[start:])


def encode_paths(seq: int, levels: Sequence[Sequence[int]]) -> bytes:
    """The `paths` bytes of node `seq` with the per-depth lists `levels` (append-tree `_deflate`)."""
    ends_with_seq = all(level and level[-1] == seq for level in levels)
    out = bytearray((1 if ends_with_seq else 0,))
    for level in levels:
        kept = level[:-1] if ends_with_seq else level
        _put_varint(len(kept), out)
        encode_deltas(kept, out)
    return bytes(out)


def decode_paths(seq: int, buf: bytes) -> list[list[int]]:
    """The per-depth lists of node `seq` (append-tree `_inflate`), refusing malformed input.

    A list may only name nodes at or before `seq` (the log cannot point forward), and a count
    may not promise more entries than bytes remain, so hostile input cannot loop or blow up.
    """
    ends_with_seq, pos = _paths_header(seq, buf)
    levels: list[list[int]] = []
    while pos < len(buf):
        level, pos = _decode_level(seq, buf, pos, ends_with_seq)
        levels.append(level)
    return levels


def decode_level(seq: int, buf: bytes, depth: int) -> list[int] | None:
    """The list at `depth` of node `seq` (None when it has fewer), as `decode_paths` gives it.
    The lists before it are stepped over at C speed, not decoded: a lookup through a node
    wants one list, and the one of a wide folder holds thousands of entries."""
    ends_with_seq, pos = _paths_header(seq, buf)
    for _ in range(depth):
        if pos >= len(buf):
            return None
        count, pos = _level_count(seq, buf, pos)
        pos = _skip_varints(seq, buf, pos, count)
    if pos >= len(buf):
        return None
    return _decode_level(seq, buf, pos, ends_with_seq)[0]


def _paths_header(seq: int, buf: bytes) -> tuple[bool, int]:
    if not buf:
        raise DecodingError(f"append-tree node {seq}: empty paths index")
    header, pos = _get_varint(buf, 0)
    return bool(header & 1), pos


def _level_count(seq: int, buf: bytes, pos: int) -> tuple[int, int]:
    count, pos = _get_varint(buf, pos)
    if count > len(buf) - pos:
        raise DecodingError(f"append-tree node {seq}: paths list longer than its bytes")
    return count, pos


_CONTINUATION = bytes(range(0x80, 0x100))


def _skip_varints(seq: int, buf: bytes, pos: int, count: int) -> int:
    """The position after `count` varints from `pos`. Each ends in the one byte of it below
    0x80, so a span of `count` bytes holding `t` of those needs `count - t` more bytes, and so on."""
    need = count
    while need:
        chunk = buf[pos : pos + need]
        if len(chunk) < need:
            raise DecodingError(f"append-tree node {seq}: paths list longer than its bytes")
        pos += need
        need -= len(chunk.translate(None, _CONTINUATION))
    return pos


def _decode_level(seq: int, buf: bytes, pos: int, ends_with_seq: bool) -> tuple[list[int], int]:
    """One list from `pos` (its count, then its deltas) and the position after it."""
    count, pos = _level_count(seq, buf, pos)
    size = len(buf)
    level: list[int] = []
    prev = 0
    for _ in range(count):
        if pos >= size:
            raise DecodingError(f"append-tree node {seq}: paths list longer than its bytes")
        byte = buf[pos]
        if byte < 0x80:  # most deltas fit one byte: no call for them
            prev += byte
            pos += 1
        else:
            delta, pos = _get_varint(buf, pos)
            prev += delta
        level.append(prev)
    if level and level[-1] > seq:
        raise DecodingError(f"append-tree node {seq}: paths names a later entry {level[-1]}")
    if ends_with_seq:
        level.append(seq)
    return level, pos


# --- nodes --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Node:
    """One decoded log entry of the tree. `value` is None for a deletion."""

    seq: int
    name: str
    names: Names
    value: bytes | None
    paths: bytes
    _levels: dict[int, list[int] | None] | None = None  # decoded lists by depth

    def level(self, depth: int) -> list[int] | None:
        """The list at `depth` (None when the paths end before it), decoded on first use alone."""
        if self._levels is None:
            self._levels = {}
        if depth not in self._levels:
            self._levels[depth] = decode_level(self.seq, self.paths, depth)
        return self._levels[depth]

    def component(self, depth: int) -> str | None:
        """The name component at `depth`, None when the name is not that deep."""
        return self.names[depth] if depth < len(self.names) else None

    def encode(self) -> bytes:
        msg = schema_pb2.Node(name=self.name, paths=self.paths)
        if self.value is not None:
            msg.value = self.value
        return msg.SerializeToString()


def decode_node(seq: int, block: bytes) -> Node:
    """Decodes metadata block `seq` as a `Node` (DecodingError when it is not one)."""
    msg = schema_pb2.Node()
    try:
        msg.ParseFromString(block)
    except (DecodeError, UnicodeDecodeError) as err:
        raise DecodingError(f"metadata block {seq} is not a hyperdrive node: {err}") from None
    value = msg.value if msg.HasField("value") else None
    return Node(seq, msg.name, split(msg.name), value, msg.paths)


@dataclass(slots=True)
class Change:
    """One entry of `history()` or `diff()`: a put or a del of `name` at log index `version`."""

    type: str
    name: str
    version: int
    value: bytes | None


def _change(node: Node) -> Change:
    return Change("put" if node.value else "del", node.name, node.seq, node.value)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """The listing key of an entry whose block is no Node: its name cannot be known, so no
    path reaches it, but the folder's later lists keep naming it as the index did."""

    seq: int


Key = str | None | Unreadable

_SPLICE_WITHIN = 8  # `Listing.without` finds an entry this near the oldest by walking the deltas


class Listing:
    """One folder's list at one head: child name (None for the folder's own node, `Unreadable`
    for an entry that is no Node) -> seq.

    Insertion order is ascending seq, as in the encoded lists. The varint deltas of the entries
    are kept, with where the last one starts, so the two common puts cost O(1) encoding instead
    of O(width): a new name (append a delta) and a new entry in the folder written last (drop
    the last delta, append one).
    """

    __slots__ = ("entries", "_deltas", "_last_start")

    def __init__(self, entries: dict[Key, int]) -> None:
        self.entries = entries
        self._deltas: bytearray | None = None
        self._last_start = 0

    def deltas(self) -> bytearray:
        if self._deltas is None:
            values = list(self.entries.values())
            self._deltas = bytearray()
            encode_deltas(values[:-1], self._deltas)
            self._last_start = len(self._deltas)
            if values:
                _put_varint(values[-1] - (values[-2] if len(values) > 1 else 0), self._deltas)
        return self._deltas

    def replaced(self, key: Key, seq: int) -> tuple[bytes, Listing]:
        """For a put of node `seq` under child `key`: its encoded level and the new listing.

        The new listing takes this one's entries and deltas over and changes them in place, so
        a put into a wide folder copies only the level it encodes. This listing is spent: it
        reads as the new one from now on, and its identity no longer names a state (`EMPTY`,
        shared by every empty folder, is copied instead)."""
        if self is EMPTY:
            entries: dict[Key, int] = {}
            deltas = bytearray()
        else:
            entries, deltas = self.entries, self.deltas()
            self._deltas = None  # spent: read again, it encodes its (new) entries afresh
        old = entries.pop(key, None)
        if old is not None:
            if old > next(reversed(entries.values()), 0):  # it was the newest entry
                del deltas[self._last_start :]
            else:
                deltas = bytearray()
                encode_deltas(entries.values(), deltas)
        level = bytearray()
        _put_varint(len(entries), level)
        level += deltas
        new = Listing(entries)
        new._deltas = deltas
        new._last_start = len(deltas)
        _put_varint(seq - next(reversed(entries.values()), 0), deltas)
        entries[key] = seq
        return bytes(level), new

    def without(self, key: Key) -> Listing:
        """The listing with no entry for `key`. Like `replaced`, it takes this listing's entries
        and deltas over and spends it. The deltas are spliced rather than encoded again
        (`rm -rf` removes in listing order, oldest first after the folder's own entry)."""
        entries = self.entries
        if key not in entries:
            return self
        deltas, last_start = self.deltas(), self._last_start
        self._deltas = None  # spent, as in `replaced`
        new = Listing(entries)
        if key == next(reversed(entries)):
            del entries[key]
            del deltas[last_start:]
            # The entry before is the last now: its delta starts after the terminating byte
            # (< 0x80) of the one before it.
            start = len(deltas) - 1
            while start > 0 and deltas[start - 1] >= 0x80:
                start -= 1
            new._deltas, new._last_start = deltas, max(start, 0)
            return new
        # Splice: the next entry's delta now counts from the entry before the removed one. Its
        # bytes are found by walking the deltas before it when it is among the oldest few, or
        # directly when those are one byte each (a folder written together); else the
        # deltas are encoded again, lazily.
        at = next((i for i, k in enumerate(itertools.islice(entries, _SPLICE_WITHIN)) if k == key), None)
        if at is not None:
            start = end = 0
            for i in range(at + 2):
                if i == at:
                    start = end
                end = _get_varint(deltas, end)[1]
        else:
            at = list(entries).index(key)
            if max(deltas[: at + 2]) >= 0x80:
                del entries[key]
                return new
            start, end = at, at + 2
        seqs = list(itertools.islice(entries.values(), max(at - 1, 0), at + 2))
        del entries[key]
        piece = bytearray()
        _put_varint(seqs[-1] - (seqs[0] if at else 0), piece)
        deltas[start:end] = piece
        last = len(entries) == at + 1  # the next entry was the newest
        new._deltas = deltas
        new._last_start = start if last else last_start + len(piece) - (end - start)
        return new


EMPTY = Listing({})


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class WeightedCache(Generic[K, V]):
    """Values by key, the least recently used dropped once their weights add up past
    `max_bytes` (`dropped(key)` is told of each). `get` marks a value used; `in` does not."""

    def __init__(self, max_bytes: int, weight: Callable[[V], int], dropped: Callable[[K], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._weight = weight
        self._dropped = dropped
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def __contains__(self, key: K) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: K, value: V) -> None:
        self.pop(key)
        weight = self._weight(value)
        self._items[key] = (value, weight)
        self.bytes += weight
        while self.bytes > self.max_bytes and len(self._items) > 1:
            old, (_, weight) = self._items.popitem(last=False)
            self.bytes -= weight
            if self._dropped is not None:
                self._dropped(old)

    def pop(self, key: K) -> V | None:
        """Take `key` out (not a drop: `dropped` is not told)."""
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.bytes -= item[1]
        return item[0]

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


class NodeCache(WeightedCache[int, Node]):
    """Decoded nodes by seq, within NODE_CACHE_BYTES (a dropped node is read and decoded again
    when next needed). A node's weight grows with its `paths`, which index every entry of each
    folder on its way: kept all, the nodes of a folder n wide would hold n² bytes. A node
    written here is `hold`: it is kept, whatever it weighs, until `stored` says the log has it
    (before that, it could not be read again)."""

    def __init__(self, max_bytes: int = NODE_CACHE_BYTES) -> None:
        super().__init__(max_bytes, _weight)
        self._unstored: dict[int, Node] = {}

    def get(self, seq: int) -> Node | None:
        node = self._unstored.get(seq)
        return node if node is not None else super().get(seq)

    def hold(self, node: Node) -> None:
        self.pop(node.seq)
        self._unstored[node.seq] = node

    def stored(self, length: int) -> None:
        """The log holds every entry below `length` now: the nodes held for them may go."""
        for seq in [seq for seq in self._unstored if seq < length]:
            self.put(seq, self._unstored.pop(seq))


def _weight(node: Node) -> int:
    return _NODE_OVERHEAD + len(node.paths) + len(node.value or b"") + 2 * len(node.name)


def listing_weight(listing: Listing) -> int:
    return _LISTING_OVERHEAD + _LISTING_ENTRY * len(listing.entries)


class AppendTree:
    """The tree at head `length - 1` of a log whose entries from `offset` on are `Node`s.

    `read(seq)` returns the raw block; decoded nodes are shared with checkouts through `nodes`.
    """

    def __init__(
        self,
        read: Callable[[int], bytes],
        length: int,
        offset: int = 1,
        nodes: NodeCache | None = None,
        writable: bool = True,
    ) -> None:
        self._read = read
        self.length = length
        self.offset = offset
        self.nodes = NodeCache() if nodes is None else nodes
        self.writable = writable
        # The folders with a cached listing, by folder: a deletion finds the listings under it
        # without a scan of every cached folder.
        self._cached_below: FolderIndex[Names] = FolderIndex((), lambda names: names[:-1], self._is_cached)
        self._listings: WeightedCache[Names, Listing] = WeightedCache(
            LISTING_CACHE_BYTES, listing_weight, self._cached_below.prune
        )

    # -- reading ---------------------------------------------------------------------------------

    def node(self, seq: int) -> Node:
        node = self.nodes.get(seq)
        if node is None:
            if not self.offset <= seq < self.length:
                raise DecodingError(f"append-tree index names entry {seq}, outside the log")
            node = decode_node(seq, self._read(seq))
            self.nodes.put(seq, node)
        return node

    @property
    def head(self) -> Node | None:
        return self.node(self.length - 1) if self.length > self.offset else None

    def _level_listing(self, node: Node, depth: int) -> Listing:
        level = node.level(depth)
        if level is None:
            return EMPTY
        entries: dict[Key, int] = {}
        for seq in level:
            entries.setdefault(self._key(seq, depth), seq)
        return Listing(entries)

    def _key(self, seq: int, depth: int) -> Key:
        """Entry `seq`'s key in the listing of a folder `depth` deep. A block that is no Node
        is that entry's error alone: its siblings still list and resolve."""
        try:
            return self.node(seq).component(depth)
        except DecodingError:
            return Unreadable(seq)

    def _list_from(self, node: Node, names: Names) -> Listing:
        """append-tree `_list`: the listing of folder `names` as `node` indexed it."""
        while True:
            cmp = common_prefix(node.names, names)
            if cmp == len(names):
                return self._level_listing(node, cmp)
            level = node.level(cmp)
            if level is None:
                return EMPTY
            target = names[cmp]
            # Each hop moves to an older entry, so a hostile index cannot make this loop.
            for seq in level:
                if seq < node.seq and self._key(seq, cmp) == target:
                    node = self.node(seq)
                    break
            else:
                return EMPTY

    def listing(self, names: Names) -> Listing:
        """The listing of folder `names` at the head, resolved one component at a time."""
        found = self._listings.get(names)
        if found is not None:
            return found
        depth = len(names) - 1
        while depth >= 0 and (found := self._listings.get(names[:depth])) is None:
            depth -= 1  # the deepest folder on the way that is resolved already
        if found is None:  # not even the root's
            head = self.head
            found = self._list_from(head, ()) if head is not None else EMPTY
            self._cache((), found)
            depth = 0
        while depth < len(names):
            rep = found.entries.get(names[depth])
            depth += 1
            found = EMPTY if rep is None else self._list_from(self.node(rep), names[:depth])
            self._cache(names[:depth], found)
        return found

    def _cache(self, names: Names, listing: Listing) -> None:
        """Keep the listing of folder `names`, indexed under its parent folders."""
        self._listings.put(names, listing)
        self._cached_below.add(names)

    def _is_cached(self, names: Names) -> bool:
        return names in self._listings

    def _drop_cached_below(self, names: Names) -> None:
        """Forget the cached listings of every folder under `names` (not of `names` itself)."""
        for folder in self._cached_below.take(names):
            self._listings.pop(folder)

    def get(self, names: Names) -> Node | None:
        """The live node named exactly `names` (None when absent or deleted)."""
        if not names:
            return None
        rep = self.listing(names[:-1]).entries.get(names[-1])
        if rep is None:
            return None
        node = self.node(rep)
        if node.names != names:  # the newest entry below `names`: its index names the folder's own node
            seq = self.listing(names).entries.get(None)
            if seq is None:
                return None
            node = self.node(seq)
        return node if node.value is not None and node.names == names else None

    def children(self, names: Names) -> list[Node] | None:
        """The nodes representing each child of folder `names`; None when nothing is there."""
        listing = self.listing(names)
        if not listing.entries:
            return None
        return [self.node(seq) for key, seq in listing.entries.items() if isinstance(key, str)]

    def list(self, names: Names) -> list[str] | None:
        """Child names of folder `names` (append-tree `list`); None when the folder is unknown."""
        listing = self.listing(names)
        if not listing.entries:
            return None
        return [key for key in listing.entries if isinstance(key, str)]

    def path(self, names: Names) -> list[int]:
        """append-tree `path`: the sequence numbers a lookup of `names` visits from the head."""
        visited: list[int] = []
        node = self.head
        while node is not None:
            visited.append(node.seq)
            cmp = common_prefix(names, node.names)
            if cmp == len(names) == len(node.names):
                break
            level = node.level(cmp)
            if level is None:
                break
            target = names[cmp] if cmp < len(names) else None
            candidates = [s for s in level if s < node.seq]
            node = next((self.node(s) for s in candidates if self._key(s, cmp) == target), None)
        return visited

    def checkout(self, length: int) -> AppendTree:
        """A read-only tree at log length `length`, sharing decoded nodes."""
        return AppendTree(self._read, min(length, self.length), self.offset, self.nodes, writable=False)

    def history(self, start: int = 0, end: int | None = None) -> Iterator[Change]:
        """Every entry from `start` (at least the offset) to `end` (default: the head), in order."""
        stop = self.length if end is None else min(end, self.length)
        for seq in range(max(start, self.offset), stop):
            yield _change(self.node(seq))

    def diff(self, to: AppendTree) -> list[Change]:
        """append-tree `diff`: what changed going from this tree to `to` (puts are in `to`)."""
        queue: list[Names] = [()]
        force_visit: set[Names] = set()
        head = to.head
        if head is not None and head.value is None:
            force_visit.update(head.names[:i] for i in range(len(head.names)))
        out: list[Change] = []
        while queue:
            folder = queue.pop()
            visited: set[Names] = set()
            a = to.children(folder) or []
            b = self.children(folder) or []

            def push(
                kind: str, node: Node, visited: set[Names] = visited, folder: Names = folder
            ) -> None:
                sub = node.names[: len(folder) + 1]
                if node.names == sub:
                    out.append(Change(kind, node.name, node.seq, node.value))
                if sub not in visited:
                    visited.add(sub)
                    queue.append(sub)

            i = j = 0
            while i < len(a) and j < len(b):
                if a[i].seq == b[j].seq:
                    sub = a[i].names[: len(folder) + 1]
                    if sub in force_visit and sub not in visited:
                        visited.add(sub)
                        queue.append(sub)
                    i += 1
                    j += 1
                elif a[i].seq < b[j].seq:
                    push("put", a[i])
                    i += 1
                else:
                    push("del", b[j])
                    j += 1
            for node in a[i:]:
                push("put", node)
            for node in b[j:]:
                push("del", node)
        return out

    # -- writing ---------------------------------------------------------------------------------

    def _append(self, node: Node, listings: dict[Names, Listing]) -> bytes:
        self.nodes.hold(node)  # until the log has it (`NodeCache.stored`)
        self.length = node.seq + 1
        for names, listing in listings.items():
            self._cache(names, listing)
        return node.encode()

    def put(self, names: Names, value: bytes) -> bytes:
        """Adds a put of `names` as entry `length`; returns the block to append to the log."""
        self._check_writable()
        seq = self.length
        # Every listing first: `replaced` spends each, so none may be read after a failure.
        folders = [self.listing(names[:depth]) for depth in range(len(names) + 1)]
        levels = bytearray()
        listings: dict[Names, Listing] = {}
        for depth, folder in enumerate(folders):
            key = names[depth] if depth < len(names) else None
            level, listings[names[:depth]] = folder.replaced(key, seq)
            levels += level
        node = Node(seq, join(names), names, value, bytes((1,)) + bytes(levels))
        return self._append(node, listings)

    def delete(self, names: Names) -> bytes:
        """Adds a deletion of `names` as entry `length`; returns the block to append."""
        self._check_writable()
        seq = self.length
        depth = common_prefix(names, self._closest_live(names, join(names))) + 1
        # Level i lists folder names[:i] without the entry for names[i]; the folders on the way
        # to the last level lead to this node instead. Those are the folders' new listings too,
        # with their encoded deltas for the next change. The last level never holds this node,
        # so the paths' header has no "each level ends with it" flag.
        paths = bytearray((0,))
        listings: dict[Names, Listing] = {}
        folders = [self.listing(names[:i]) for i in range(depth)]  # first, as in `put`
        for i, old in enumerate(folders):
            key = names[i] if i < len(names) else None
            new = old.replaced(key, seq)[1] if i < depth - 1 else old.without(key)
            _put_varint(len(new.entries), paths)
            paths += new.deltas()
            listings[names[:i]] = new
        node = Node(seq, join(names), names, None, bytes(paths))
        # The folder the levels end at, and every one below it, now resolve to nothing.
        if depth <= len(names):
            self._listings.pop(names[:depth])
            self._drop_cached_below(names[:depth])
        return self._append(node, listings)

    def _closest_live(self, names: Names, ignore: str) -> Names:
        """The names of the newest live node near `names` (append-tree `_del`'s `closest`)."""
        for j in range(len(names), -1, -1):
            for key, seq in reversed(self.listing(names[:j]).entries.items()):
                if isinstance(key, Unreadable):
                    continue
                node = self.node(seq)
                if node.name != ignore and node.value:
                    return node.names
        return ()

    def _check_writable(self) -> None:
        if not self.writable:
            raise ReadOnlyDriveError("cannot write to a checkout")
