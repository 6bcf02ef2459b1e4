"""Per-core write batches (`CoreTX`) and read batches (`CoreRX`) of hypercore-storage.

A `CoreWriteBatch` collects changes and `flush()` commits them as one RocksDB WriteBatch (or,
for an atomized core, adds them to the atom, committed by `Atom.flush()`). A `CoreReadBatch`
reads one core's values; blocks and tree nodes below a dependency's length come from the
dependency's data pointer (how a named session shares its parent's history).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hyperfs.core import flat_tree
from hyperfs.core.encoding import TreeNode, decode_tree_node, encode_tree_node
from hyperfs.core.storage import keys, schema
from hyperfs.core.storage.keys import INFINITY
from hyperfs.core.storage.rocks import Change, Rocks
from hyperfs.core.storage.schema import Auth, Dependency, Head, Hints, Session, decode_value
from hyperfs.core.storage.view import Reader, View
from hyperfs.errors import CorruptStorageError, NotWritableError

T = TypeVar("T")


@dataclass(frozen=True)
class CorePointers:
    """Where one core (or named session) keeps its state: JS `storage.core`."""

    core_pointer: int
    data_pointer: int
    dependencies: tuple[Dependency, ...] = ()


def find_block_dependency(deps: tuple[Dependency, ...], index: int) -> Dependency | None:
    """The dependency that holds block `index`, or None when the core's own data does."""
    for dep in deps:
        if index < dep.length:
            return dep
    return None


def find_tree_dependency(deps: tuple[Dependency, ...], index: int) -> Dependency | None:
    """The dependency that holds tree node `index`, or None when the core's own data does."""
    for dep in deps:
        if flat_tree.right_span(index) <= (dep.length - 1) * 2:
            return dep
    return None


class CoreWriteBatch:
    """Changes to one core, committed atomically by `flush()`."""

    def __init__(
        self,
        core: CorePointers,
        rocks: Rocks,
        view: View | None,
        snapshotted: bool = False,
        changes: list[Change] | None = None,
        logged: bool = True,
    ):
        """`changes` shares a list with another batch, so both commit in one flush; `logged=False`
        commits without the write-ahead log (see `Rocks.commit`)."""
        if snapshotted:
            raise NotWritableError("cannot write to a storage snapshot")
        self.core = core
        self._rocks = rocks
        self._view = view
        self.changes: list[Change] | None = [] if changes is None else changes
        self.logged = logged

    def _push(self, key: bytes, value: bytes | None, end: bytes | None = None) -> None:
        if self.changes is None:
            raise NotWritableError("write batch was already flushed")
        self.changes.append((key, value, end))

    def set_auth(self, auth: Auth) -> None:
        self._push(keys.core_auth(self.core.core_pointer), schema.encode_auth(auth))

    def set_sessions(self, sessions: list[Session]) -> None:
        self._push(keys.core_sessions(self.core.core_pointer), schema.encode_sessions(sessions))

    def set_head(self, head: Head) -> None:
        self._push(keys.data_head(self.core.data_pointer), schema.encode_head(head))

    def set_dependency(self, dep: Dependency) -> None:
        self._push(keys.data_dependency(self.core.data_pointer), schema.encode_dependency(dep))

    def set_hints(self, hints: Hints) -> None:
        self._push(keys.data_hints(self.core.data_pointer), schema.encode_hints(hints))

    def put_block(self, index: int, data: bytes) -> None:
        self._push(keys.data_block(self.core.data_pointer, index), bytes(data))

    def delete_block(self, index: int) -> None:
        self._push(keys.data_block(self.core.data_pointer, index), None)

    def delete_block_range(self, start: int, end: int = INFINITY) -> None:
        """Delete blocks [start, end); end -1 means to the last one."""
        ptr = self.core.data_pointer
        self._push(keys.data_block(ptr, start), None, keys.data_block(ptr, end))

    def put_tree_node(self, node: TreeNode) -> None:
        self._push(keys.data_tree(self.core.data_pointer, node.index), encode_tree_node(node))

    def delete_tree_node(self, index: int) -> None:
        self._push(keys.data_tree(self.core.data_pointer, index), None)

    def delete_tree_node_range(self, start: int, end: int = INFINITY) -> None:
        ptr = self.core.data_pointer
        self._push(keys.data_tree(ptr, start), None, keys.data_tree(ptr, end))

    def put_bitfield_page(self, index: int, data: bytes) -> None:
        self._push(keys.data_bitfield(self.core.data_pointer, index), bytes(data))

    def delete_bitfield_page(self, index: int) -> None:
        self._push(keys.data_bitfield(self.core.data_pointer, index), None)

    def delete_bitfield_page_range(self, start: int, end: int = INFINITY) -> None:
        ptr = self.core.data_pointer
        self._push(keys.data_bitfield(ptr, start), None, keys.data_bitfield(ptr, end))

    def put_user_data(self, key: str, value: bytes | str) -> None:
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        self._push(keys.data_user_data(self.core.data_pointer, key), data)

    def delete_user_data(self, key: str) -> None:
        self._push(keys.data_user_data(self.core.data_pointer, key), None)

    def put_local(self, key: bytes, value: bytes) -> None:
        self._push(keys.data_local(self.core.data_pointer, key), bytes(value))

    def delete_local(self, key: bytes) -> None:
        self._push(keys.data_local(self.core.data_pointer, key), None)

    def delete_local_range(self, start: bytes, end: bytes | None = None) -> None:
        """Delete local keys in [start, end); None means to the last one."""
        ptr = self.core.data_pointer
        stop = keys.data_local_end(ptr) if end is None else keys.data_local(ptr, end)
        self._push(keys.data_local(ptr, start), None, stop)

    def flush(self) -> bool:
        """Commit the changes: True when written to RocksDB, False when added to the atom."""
        changes, self.changes = self.changes, None
        if changes is None:
            return self._view is None
        if self._view is not None:
            self._view.apply(changes)
            return False
        if changes:
            self._rocks.commit(changes, logged=self.logged)
        return True


class CoreReadBatch:
    """Reads of one core's values (returns None for what is not stored)."""

    def __init__(self, core: CorePointers, reader: Reader, view: View):
        self.core = core
        self._reader = reader
        self._view = view

    def _get(self, key: bytes) -> bytes | None:
        return self._view.get(self._reader, key)

    def _decoded(self, what: str, decode: Callable[[bytes], T], key: bytes) -> T | None:
        data = self._get(key)
        return None if data is None else decode_value(what, decode, data)

    def get_auth(self) -> Auth | None:
        key = keys.core_auth(self.core.core_pointer)
        return self._decoded(f"auth of core {self.core.core_pointer}", schema.decode_auth, key)

    def get_sessions(self) -> list[Session] | None:
        key = keys.core_sessions(self.core.core_pointer)
        return self._decoded(f"sessions of core {self.core.core_pointer}", schema.decode_sessions, key)

    def get_head(self) -> Head | None:
        key = keys.data_head(self.core.data_pointer)
        return self._decoded(f"head of data {self.core.data_pointer}", schema.decode_head, key)

    def get_dependency(self) -> Dependency | None:
        key = keys.data_dependency(self.core.data_pointer)
        return self._decoded(f"dependency of data {self.core.data_pointer}", schema.decode_dependency, key)

    def get_hints(self) -> Hints | None:
        key = keys.data_hints(self.core.data_pointer)
        return self._decoded(f"hints of data {self.core.data_pointer}", schema.decode_hints, key)

    def _block_key(self, index: int) -> bytes:
        dep = find_block_dependency(self.core.dependencies, index)
        return keys.data_block(self.core.data_pointer if dep is None else dep.data_pointer, index)

    def get_block(self, index: int) -> bytes | None:
        return self._get(self._block_key(index))

    def get_blocks(self, indexes: list[int]) -> list[bytes | None]:
        """Several blocks in one RocksDB multi-get."""
        return self._view.get_many(self._reader, [self._block_key(i) for i in indexes])

    def get_tree_node(self, index: int) -> TreeNode | None:
        dep = find_tree_dependency(self.core.dependencies, index)
        ptr = self.core.data_pointer if dep is None else dep.data_pointer
        what = f"tree node {index} of data {ptr}"
        node = self._decoded(what, decode_tree_node, keys.data_tree(ptr, index))
        if node is not None and node.index != index:
            raise CorruptStorageError(f"corrupt {what} in storage: it holds node {node.index}")
        return node

    def has_tree_node(self, index: int) -> bool:
        return self.get_tree_node(index) is not None

    def get_bitfield_page(self, index: int) -> bytes | None:
        return self._get(keys.data_bitfield(self.core.data_pointer, index))

    def get_user_data(self, key: str) -> bytes | None:
        return self._get(keys.data_user_data(self.core.data_pointer, key))

    def get_local(self, key: bytes) -> bytes | None:
        return self._get(keys.data_local(self.core.data_pointer, key))
