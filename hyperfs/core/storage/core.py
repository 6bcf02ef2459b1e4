"""`HypercoreStorage`: one core's (or named session's) view of the store (JS `HypercoreStorage`).

It holds the core's pointers, a reader (the live database or a snapshot) and, when atomized, the
atom whose pending changes its reads see and its writes join.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from hyperfs.core.encoding import TreeNode
from hyperfs.core.storage import streams
from hyperfs.core.storage.batch import CorePointers, CoreReadBatch, CoreWriteBatch
from hyperfs.core.storage.schema import Dependency, Head, Session
from hyperfs.core.storage.view import Reader, View
from hyperfs.errors import InvalidArgumentError, NotWritableError, SessionClosedError

if TYPE_CHECKING:
    from hyperfs.core.storage.rocks import Change
    from hyperfs.core.storage.store import Atom, CorestoreStorage


class HypercoreStorage:
    """Storage of one core: read/write batches, sessions, snapshots, atoms, streams."""

    def __init__(
        self, store: CorestoreStorage, reader: Reader, core: CorePointers, view: View | None, atom: Atom | None
    ) -> None:
        self.store = store
        self.core = core
        self.atom = atom
        self._reader = reader
        self._view = view if view is not None else (atom.view if atom is not None else View())
        self.closed = False
        reader.acquire()

    # --- dependencies -------------------------------------------------------------------------

    @property
    def dependencies(self) -> tuple[Dependency, ...]:
        return self.core.dependencies

    def get_dependency_length(self) -> int:
        """The length of the last dependency, -1 without one."""
        return self.core.dependencies[-1].length if self.core.dependencies else -1

    def get_dependency(self, length: int) -> Dependency | None:
        """The last dependency shorter than `length`."""
        for dep in reversed(self.core.dependencies):
            if dep.length < length:
                return dep
        return None

    def set_dependency_head(self, dep: Dependency) -> None:
        """Make `dep` the last dependency (dropping the ones after it), or the only one."""
        deps = self.core.dependencies
        for i in range(len(deps) - 1, -1, -1):
            if deps[i].data_pointer != dep.data_pointer:
                continue
            self.core = replace(self.core, dependencies=deps[:i] + (dep,))
            return
        self.core = replace(self.core, dependencies=(dep,))

    def update_dependency_length(self, length: int, truncated: bool = False) -> None:
        """Cut the dependencies at `length` (after an append past or a truncate into them)."""
        deps = self.core.dependencies
        i = self.find_dependency_index(length, truncated)
        if i == -1:
            raise InvalidArgumentError(f"no dependency covers length {length}")
        self.core = replace(self.core, dependencies=deps[:i] + (Dependency(deps[i].data_pointer, length),))

    def find_dependency_index(self, length: int, truncated: bool = False) -> int:
        deps = self.core.dependencies
        if truncated:
            return next((i for i, d in enumerate(deps) if d.length >= length), -1)
        return next((i for i in range(len(deps) - 1, -1, -1) if deps[i].length <= length), -1)

    def _add_dependency(self, dep: Dependency | None) -> tuple[Dependency, ...]:
        deps: list[Dependency] = []
        for d in self.core.dependencies:
            if dep is not None and d.length > dep.length:
                if d.data_pointer != dep.data_pointer:
                    deps.append(Dependency(d.data_pointer, dep.length))
                return tuple(deps)
            deps.append(d)
        if dep is not None and (not deps or deps[-1].data_pointer != dep.data_pointer):
            deps.append(dep)
        return tuple(deps)

    # --- batches --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise SessionClosedError("core storage is closed")

    def read(self) -> CoreReadBatch:
        """A read batch (JS `read()`): get_head, get_block, get_tree_node, …"""
        self._check_open()
        return CoreReadBatch(self.core, self._reader, self._view)

    def write(self, logged: bool = True, changes: list[Change] | None = None) -> CoreWriteBatch:
        """A write batch (JS `write()`); `flush()` commits it atomically (or adds it to the atom).
        `logged=False`: committed without the write-ahead log, durable with the store's next
        logged commit or flush (`Rocks.commit`). `changes`: another batch's list (of a core in
        the same store, outside an atom), so that batch's one flush commits both."""
        self._check_open()
        return CoreWriteBatch(
            self.core,
            self.store.rocks,
            self._view if self.atom else None,
            self._reader.snapshotted,
            changes=changes,
            logged=logged,
        )

    # --- snapshots and atoms ----------------------------------------------------------------------

    @property
    def snapshotted(self) -> bool:
        return self._reader.snapshotted

    def snapshot(self) -> HypercoreStorage:
        """A read-only storage that keeps seeing the core as it is now."""
        self._check_open()
        return HypercoreStorage(self.store, self.store.rocks.snapshot(), self.core, self._view.snapshot(), None)

    def create_atom(self) -> Atom:
        return self.store.create_atom()

    def atomize(self, atom: Atom) -> HypercoreStorage:
        """The same core whose writes join `atom` (committed together by `atom.flush()`)."""
        if self.atom is not None and self.atom is not atom:
            raise InvalidArgumentError("cannot atomize an atomized storage with a different atom")
        return HypercoreStorage(self.store, self.store.rocks.live, self.core, atom.view, atom)

    # --- sessions ---------------------------------------------------------------------------------

    def _session_storage(self, core: CorePointers) -> HypercoreStorage:
        # a session of a snapshot reads the same snapshot
        return HypercoreStorage(self.store, self._reader, core, self._view if self.atom else None, self.atom)

    def resume_session(self, name: str) -> HypercoreStorage | None:
        """The named session of this core, or None if it was never created."""
        sessions = self.read().get_sessions() or []
        session = next((s for s in sessions if s.name == name), None)
        if session is None:
            return None
        core = CorePointers(self.core.core_pointer, session.data_pointer)
        dependency = CoreReadBatch(core, self._reader, self._view).get_dependency()
        if dependency is not None:
            core = replace(core, dependencies=self._add_dependency(dependency))
        return self._session_storage(core)

    def create_session(self, name: str, head: Head | None) -> HypercoreStorage:
        """A named session that shares this core's data below `head.length` (fresh state above)."""
        if self.snapshotted:
            raise NotWritableError("cannot create a session on a storage snapshot")
        rx = self.read()
        sessions = rx.get_sessions() or []
        existing_head = rx.get_head()
        if head is None:
            head = existing_head
        if existing_head is not None and head is not None and head.length > existing_head.length:
            raise InvalidArgumentError(
                f"session head length {head.length} is ahead of the core ({existing_head.length})"
            )
        session = next((s for s in sessions if s.name == name), None)
        fresh = session is None
        if session is None:
            session = Session(name, self.store._alloc_data())
            sessions.append(session)
        length = 0 if head is None else head.length
        core = CorePointers(
            self.core.core_pointer,
            session.data_pointer,
            self._add_dependency(Dependency(self.core.data_pointer, length)),
        )
        tx = self.write()
        tx.set_sessions(sessions)
        # one commit for the session list and the session's state
        session_tx = CoreWriteBatch(core, self.store.rocks, None, changes=tx.changes)
        if length > 0 and head is not None:
            session_tx.set_head(head)
        session_tx.set_dependency(core.dependencies[-1])
        if not fresh:  # a re-created session starts over
            session_tx.delete_block_range(0)
            session_tx.delete_tree_node_range(0)
            session_tx.delete_bitfield_page_range(0)
        tx.flush()
        return self._session_storage(core)

    def create_atomic_session(self, atom: Atom, head: Head | None) -> HypercoreStorage:
        """This core inside `atom`, with `head` staged in the atom."""
        core = replace(self.core, dependencies=self._add_dependency(None))
        if head is not None and head.length > 0:
            tx = CoreWriteBatch(core, self.store.rocks, atom.view)
            tx.set_head(head)
            tx.flush()
        return self.atomize(atom)

    # --- streams ----------------------------------------------------------------------------------

    def create_block_stream(
        self, *, gt: int = -1, gte: int | None = None, lt: int | None = None, lte: int = -1, reverse: bool = False
    ) -> Iterator[streams.BlockEntry]:
        start, end = streams.index_range(gt, gte, lt, lte)
        return streams.block_stream(self.core, self._reader, self._view, start, end, reverse)

    def create_tree_node_stream(
        self, *, gt: int = -1, gte: int | None = None, lt: int | None = None, lte: int = -1, reverse: bool = False
    ) -> Iterator[TreeNode]:
        start, end = streams.index_range(gt, gte, lt, lte)
        return streams.tree_node_stream(self.core, self._reader, self._view, start, end, reverse)

    def create_bitfield_stream(
        self, *, gt: int = -1, gte: int | None = None, lt: int | None = None, lte: int = -1, reverse: bool = False
    ) -> Iterator[streams.BitfieldEntry]:
        start, end = streams.index_range(gt, gte, lt, lte)
        return streams.bitfield_stream(self.core, self._reader, self._view, start, end, reverse)

    def create_user_data_stream(
        self, *, gte: str = "", lt: str | None = None, reverse: bool = False
    ) -> Iterator[streams.UserDataEntry]:
        return streams.user_data_stream(self.core, self._reader, self._view, gte, lt, reverse)

    def create_local_stream(
        self, *, gte: bytes = b"", lt: bytes | None = None, reverse: bool = False
    ) -> Iterator[streams.LocalEntry]:
        return streams.local_stream(self.core, self._reader, self._view, gte, lt, reverse)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._reader.release()

