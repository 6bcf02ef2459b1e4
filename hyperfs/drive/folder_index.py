"""Which folders lead to the keys a cache or table holds: each folder's children that are held
or have held keys under them, so what lies under a folder is found without a scan of every key
held (a deletion's cached listings, a rename's inode numbers)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class FolderIndex(Generic[K]):
    """The folder index of keys under `root`; `parent(key)` is the folder holding a key, and
    `held(key)` whether the cache or table holds it. Every folder with children here, but the
    root, is among its own parent's children."""

    def __init__(self, root: K, parent: Callable[[K], K], held: Callable[[K], bool]) -> None:
        self._root = root
        self._parent = parent
        self._held = held
        self._children: dict[K, set[K]] = {}

    def add(self, key: K) -> None:
        """Index `key` under its folder, and that folder under its own, up to one already in."""
        while key != self._root:
            parent = self._parent(key)
            siblings = self._children.get(parent)
            if siblings is not None:
                siblings.add(key)
                return
            self._children[parent] = {key}
            key = parent

    def prune(self, key: K) -> None:
        """Unindex `key` unless it is held or has held keys under it, and so on up."""
        while key != self._root and not self._held(key) and not self._children.get(key):
            self._children.pop(key, None)
            parent = self._parent(key)
            siblings = self._children.get(parent)
            if siblings is None:
                return
            siblings.discard(key)
            key = parent

    def take(self, top: K) -> list[K]:
        """Take the index under `top` out: the keys it had there (not `top` itself)."""
        taken: list[K] = []
        stack = list(self._children.pop(top, ()))
        while stack:
            key = stack.pop()
            taken.append(key)
            stack.extend(self._children.pop(key, ()))
        return taken
