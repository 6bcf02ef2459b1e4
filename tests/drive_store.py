"""Helpers of the drive tests: a real `Corestore` in a folder, and async tests under trio."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from hyperfs.core.corestore import Corestore


def trio_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Runs an async test function under `trio.run` (pytest fixtures pass through)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        trio.run(functools.partial(fn, *args, **kwargs))

    return run


@asynccontextmanager
async def open_store(path: Path) -> AsyncIterator[Corestore]:
    async with Corestore(str(path)) as store:
        yield store
