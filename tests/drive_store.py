"""The store drive tests run on: the real `Corestore` (RocksDB in a folder).

Until `hyperfs.core.corestore` lands, a stand-in gives the same `get(name=…)`/`get(key=…)` on
real `Hypercore`s in one real RocksDB (key pairs derived from the name with a fixed seed).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio


def trio_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Runs an async test function under `trio.run` (pytest fixtures pass through)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        trio.run(functools.partial(fn, *args, **kwargs))

    return run


class _NamedCores:
    def __init__(self, path: Path) -> None:
        from hyperfs.core.storage import CorestoreStorage

        self.storage = CorestoreStorage(str(path))

    async def ready(self) -> None:
        pass

    def get(self, name: str | None = None, key: bytes | None = None) -> Any:
        from hyperfs.core.crypto import hash32, key_pair
        from hyperfs.core.hypercore import Hypercore

        if name is not None:
            return Hypercore(self.storage, key_pair=key_pair(hash32(b"test store " + name.encode())))
        return Hypercore(self.storage, key=key)

    async def close(self) -> None:
        self.storage.close()


@asynccontextmanager
async def open_store(path: Path) -> AsyncIterator[Any]:
    try:
        from hyperfs.core.corestore import Corestore
    except ModuleNotFoundError:
        store: Any = _NamedCores(path)
    else:
        store = Corestore(str(path))
    await store.ready()
    try:
        yield store
    finally:
        await store.close()
