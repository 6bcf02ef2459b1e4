"""Range scans of hypercore-storage (`lib/streams.js`) as Python iterators.

Ranges take JS-style bounds: `gt`/`gte` and `lt`/`lte`, -1 meaning open. A core with
dependencies streams its blocks from each dependency's data below that dependency's length,
then from its own data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from hyperfs.core.encoding import TreeNode, decode_tree_node
from hyperfs.core.storage import keys, schema
from hyperfs.core.storage.batch import CorePointers
from hyperfs.core.storage.keys import INFINITY
from hyperfs.core.storage.schema import Alias, CoreRecord, decode_value
from hyperfs.core.storage.view import Reader, View


class BlockEntry(NamedTuple):
    index: int
    value: bytes


class BitfieldEntry(NamedTuple):
    index: int
    page: bytes


class UserDataEntry(NamedTuple):
    key: str
    value: bytes


class LocalEntry(NamedTuple):
    key: bytes
    value: bytes


class CoreEntry(NamedTuple):
    discovery_key: bytes
    core: CoreRecord


class AliasEntry(NamedTuple):
    alias: Alias
    discovery_key: bytes


def index_range(gt: int = -1, gte: int | None = None, lt: int | None = None, lte: int = -1) -> tuple[int, int]:
    """JS stream bounds to [start, end) with end INFINITY (-1) for open."""
    start = gt + 1 if gte is None else gte
    if lt is None:
        lt = INFINITY if lte == -1 else lte + 1
    return start, lt


def _block_segments(core: CorePointers, start: int, end: int) -> list[tuple[int, int, int]]:
    """(data pointer, start, end) pieces of a block range across the core's dependencies."""
    segments = []
    prev_length = 0
    for dep in core.dependencies:
        lo = max(start, prev_length)
        hi = dep.length if end == INFINITY else min(end, dep.length)
        if lo < hi:
            segments.append((dep.data_pointer, lo, hi))
        prev_length = dep.length
    lo = max(start, prev_length)
    if end == INFINITY or lo < end:
        segments.append((core.data_pointer, lo, end))
    return segments


def block_stream(
    core: CorePointers, reader: Reader, view: View, start: int, end: int, reverse: bool = False
) -> Iterator[BlockEntry]:
    segments = _block_segments(core, start, end)
    for ptr, lo, hi in reversed(segments) if reverse else segments:
        for key, value in view.scan(reader, keys.data_block(ptr, lo), keys.data_block(ptr, hi), reverse):
            yield BlockEntry(decode_value("block key", keys.decode_index, key), value)


def tree_node_stream(
    core: CorePointers, reader: Reader, view: View, start: int, end: int, reverse: bool = False
) -> Iterator[TreeNode]:
    """The core's own tree nodes (like the JS, this does not look into dependencies)."""
    ptr = core.data_pointer
    for _, value in view.scan(reader, keys.data_tree(ptr, start), keys.data_tree(ptr, end), reverse):
        yield decode_value(f"tree node of data {ptr}", decode_tree_node, value)


def bitfield_stream(
    core: CorePointers, reader: Reader, view: View, start: int, end: int, reverse: bool = False
) -> Iterator[BitfieldEntry]:
    ptr = core.data_pointer
    for key, value in view.scan(reader, keys.data_bitfield(ptr, start), keys.data_bitfield(ptr, end), reverse):
        index, type_ = decode_value("bitfield key", keys.decode_bitfield_index_and_type, key)
        if type_ == 0:
            yield BitfieldEntry(index, value)


def user_data_stream(
    core: CorePointers, reader: Reader, view: View, gte: str = "", lt: str | None = None, reverse: bool = False
) -> Iterator[UserDataEntry]:
    ptr = core.data_pointer
    end = keys.data_user_data_end(ptr) if lt is None else keys.data_user_data(ptr, lt)
    for key, value in view.scan(reader, keys.data_user_data(ptr, gte), end, reverse):
        yield UserDataEntry(decode_value("user data key", keys.decode_user_data_key, key), value)


def local_stream(
    core: CorePointers, reader: Reader, view: View, gte: bytes = b"", lt: bytes | None = None, reverse: bool = False
) -> Iterator[LocalEntry]:
    ptr = core.data_pointer
    end = keys.data_local_end(ptr) if lt is None else keys.data_local(ptr, lt)
    for key, value in view.scan(reader, keys.data_local(ptr, gte), end, reverse):
        yield LocalEntry(keys.decode_local_key(key), value)


def core_stream(reader: Reader, view: View) -> Iterator[CoreEntry]:
    start, end = keys.store_core_range()
    for key, value in view.scan(reader, start, end):
        dkey = decode_value("core key", keys.decode_store_discovery_key, key)
        yield CoreEntry(dkey, decode_value(f"core record {dkey.hex()}", schema.decode_core_record, value))


def alias_stream(reader: Reader, view: View, namespace: bytes | None = None) -> Iterator[AliasEntry]:
    start, end = keys.store_core_by_alias_range(namespace)
    for key, value in view.scan(reader, start, end):
        ns, name = decode_value("alias key", keys.decode_store_alias, key)
        yield AliasEntry(Alias(name, ns), value)
