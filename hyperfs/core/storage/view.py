"""An in-memory overlay of not-yet-committed changes (an atom's pending writes).

Reads through a `View` see its changes on top of a reader (live database or snapshot): a put
shadows the stored value, a delete or a cleared range hides it. `snapshot()` freezes a copy, so
later writes to the atom do not show through it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Protocol

from hyperfs.core.storage.rocks import Change


class Reader(Protocol):
    snapshotted: bool

    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def get(self, key: bytes) -> bytes | None: ...

    def get_many(self, keys: list[bytes]) -> list[bytes | None]: ...

    def scan(
        self, start: bytes, end: bytes, reverse: bool = False, keys_only: bool = False
    ) -> Iterator[tuple[bytes, bytes | None]]: ...


class View:
    """Pending changes in order (for the commit) and indexed (for reads)."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self._map: dict[bytes, bytes | None] = {}
        self._cleared: list[tuple[bytes, bytes]] = []

    def __len__(self) -> int:
        return len(self.changes)

    def apply(self, changes: list[Change]) -> None:
        """Add changes on top of the ones already pending."""
        for change in changes:
            key, value, end = change
            self.changes.append(change)
            if end is None:
                self._map[key] = value
                continue
            for k in self._map:
                if key <= k < end:
                    self._map[k] = None
            self._cleared.append((key, end))

    def snapshot(self) -> View:
        """A frozen copy: changes applied to this view later do not show in it."""
        snap = View()
        snap.changes = list(self.changes)
        snap._map = dict(self._map)
        snap._cleared = list(self._cleared)
        return snap

    def reset(self) -> None:
        """Forget every pending change (after they were committed)."""
        self.changes = []
        self._map = {}
        self._cleared = []

    def _hidden(self, key: bytes) -> bool:
        return any(start <= key < end for start, end in self._cleared)

    def get(self, reader: Reader, key: bytes) -> bytes | None:
        if key in self._map:
            return self._map[key]
        if self._hidden(key):
            return None
        return reader.get(key)

    def get_many(self, reader: Reader, keys: list[bytes]) -> list[bytes | None]:
        if not self.changes:
            return reader.get_many(keys)
        return [self.get(reader, key) for key in keys]

    def scan(
        self, reader: Reader, start: bytes, end: bytes, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) in [start, end) with the pending changes merged in."""
        stored = reader.scan(start, end, reverse)
        if not self.changes:
            yield from stored  # type: ignore[misc]  # values of a value scan are never None
            return
        pending = sorted(
            ((k, v) for k, v in self._map.items() if start <= k < end), reverse=reverse
        )
        stored_visible = ((k, v) for k, v in stored if k not in self._map and not self._hidden(k))
        merged = heapq.merge(stored_visible, pending, key=lambda kv: kv[0], reverse=reverse)
        for key, value in merged:
            if value is not None:
                yield key, value
