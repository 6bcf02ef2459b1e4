"""Helpers of the seed's `test/helpers/index.js` for the storage tests."""

from __future__ import annotations

import pytest

from hyperfs.core.storage import Auth, CorestoreStorage, HypercoreStorage

ZERO32 = bytes(32)
NODE_HASH = bytes.fromhex("a" * 64)
SIGNATURE = bytes.fromhex("b" * 64)


def write_blocks(core: HypercoreStorage, amount: int, start: int = 0, pre: str = "") -> None:
    tx = core.write()
    for i in range(start, start + amount):
        tx.put_block(i, f"{pre}block{i}".encode())
    tx.flush()


def read_blocks(core: HypercoreStorage, count: int) -> list[bytes | None]:
    rx = core.read()
    return [rx.get_block(i) for i in range(count)]


def read_tree_nodes(core: HypercoreStorage, count: int) -> list:
    rx = core.read()
    return [rx.get_tree_node(i) for i in range(count)]


def bitfield_pages(core: HypercoreStorage, count: int) -> list[bytes | None]:
    rx = core.read()
    return [rx.get_bitfield_page(i) for i in range(count)]


def blank_auth() -> Auth:
    return Auth(ZERO32, ZERO32)


@pytest.fixture
def store(tmp_path):
    """A store on real RocksDB in tmp_path, closed after the test."""
    s = CorestoreStorage(str(tmp_path))
    yield s
    s.close()


@pytest.fixture
def core(store):
    """A fresh core (key and discovery key all zeros), the seed's `createCore`."""
    return store.create(key=ZERO32, discovery_key=ZERO32)
