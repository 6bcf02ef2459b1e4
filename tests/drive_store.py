"""Helpers of the drive tests: a real `Corestore` in a folder, async tests under trio, and
hostile logs written by hand."""

from __future__ import annotations

import functools
from dataclasses import replace
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from hyperfs.core.corestore import Corestore
from hyperfs.drive.append_tree import Names, decode_node, decode_paths, encode_paths
from hyperfs.drive.drive import Drive


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


async def append_garbage_named_by(drive: Drive, names: Names, value: bytes) -> int:
    """Appends a block that is no Node, then a put of `names` whose index lists that block in
    its folder's listing, as a hostile writer could; returns the garbage block's seq. The
    drive's cached tree does not know the garbage: open the store afresh to read it."""
    garbage = drive.version
    await drive.metadata.append(b"\xff\xfe not a node")
    seq = garbage + 1
    node = decode_node(seq, drive.tree.put(names, value))
    levels = decode_paths(seq, node.paths)
    levels[len(names) - 1].insert(-1, garbage)
    await drive.metadata.append(replace(node, paths=encode_paths(seq, levels)).encode())
    await drive.flush()
    return garbage
