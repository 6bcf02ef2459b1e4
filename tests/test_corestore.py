"""Corestore: corestore.json key derivation on a real store, lookups, namespaces, sessions, audit."""

import os

import pytest
import trio
import trio.testing

from hyperfs.core import Corestore
from hyperfs.core.corestore import NS, child_namespace, derive_seed
from hyperfs.core.crypto import key_pair
from hyperfs.core.storage import Alias, CorestoreStorage
from hyperfs.core.z32 import encode_id
from hyperfs.errors import CoreNotFoundError, InvalidKeyError, NotWritableError, SessionClosedError, StorageError
from tests.drive_store import trio_test
from tests.vectors import load

V = load("corestore")
PRIMARY = bytes.fromhex(V["primaryKey"])


def test_ns_constant():
    assert NS.hex() == V["corestore_NS"]


@trio_test
async def test_vector_keys_on_a_real_store(tmp_path):
    async with Corestore(str(tmp_path / "store"), primary_key=PRIMARY) as store:
        for ns_case in V["namespaces"]:
            view = store
            for name in ns_case["namespace_path"]:
                view = view.namespace(name)
            assert view.ns.hex() == ns_case["namespace"]
            for case in ns_case["cores"]:
                assert derive_seed(PRIMARY, view.ns, case["name"]).hex() == case["seed"]
                core = await view.get(case["name"])
                assert core.key_pair.public_key.hex() == case["publicKey"]
                assert core.key_pair.secret_key.hex() == case["secretKey"]
                assert core.key.hex() == case["key"]
                assert core.discovery_key.hex() == case["discoveryKey"]
                assert core.id == case["id"] == encode_id(core.key)
                assert core.writable
        kp_case = V["get_by_keyPair"]
        core = await store.get(key_pair=key_pair(bytes.fromhex(kp_case["seed"])))
        assert core.key.hex() == kp_case["key"]
        assert core.discovery_key.hex() == kp_case["discoveryKey"]


@trio_test
async def test_primary_key_is_stored_and_checked(tmp_path):
    path = str(tmp_path / "store")
    async with Corestore(path) as store:
        primary = store.primary_key
        key = (await store.get("a")).key
    async with Corestore(path) as store:
        assert store.primary_key == primary
        assert (await store.get("a")).key == key
    with pytest.raises(InvalidKeyError):
        await Corestore(path, primary_key=bytes(32)).ready()
    with pytest.raises(InvalidKeyError):
        Corestore(path, primary_key=b"short")


@trio_test
async def test_get_by_key_discovery_key_and_missing(tmp_path):
    async with Corestore(str(tmp_path / "store"), primary_key=PRIMARY) as store:
        writer = await store.get("log")
        await writer.append([b"a", b"b"])
        by_key = await store.get(key=writer.key)
        by_id = await store.get(key=writer.id)
        by_dkey = await store.get(discovery_key=writer.discovery_key)
        for core in (by_key, by_id, by_dkey):
            assert core.length == 2 and await core.get(1) == b"b"
        await by_key.append(b"c")  # same store, same core: the stored key pair makes it writable
        assert writer.length == 3
        with pytest.raises(CoreNotFoundError):
            await store.get(discovery_key=bytes(32))
        with pytest.raises(InvalidKeyError):
            await store.get(key=b"\x01" * 31)
        with pytest.raises(InvalidKeyError):
            await store.get(discovery_key=b"\x01" * 5)


@trio_test
async def test_key_alone_is_readable_not_writable(tmp_path):
    other = key_pair(b"\x07" * 32)
    async with Corestore(str(tmp_path / "a")) as writer_store:
        writer = await writer_store.get(key_pair=other)
        foreign_key = writer.key
    async with Corestore(str(tmp_path / "b")) as store:
        reader = await store.get(key=foreign_key)
        assert reader.readable and not reader.writable and reader.length == 0
        with pytest.raises(NotWritableError, match="read-only"):
            await reader.append(b"x")


@trio_test
async def test_namespaces_separate_names(tmp_path):
    async with Corestore(str(tmp_path / "store"), primary_key=PRIMARY) as store:
        a = await store.get("a")
        b = await store.namespace("app").get("a")
        c = await store.namespace("app").namespace("sub").get("a")
        assert len({a.key, b.key, c.key}) == 3
        assert (await store.namespace("app").get("a")).key == b.key


@trio_test
async def test_session_close_leaves_others_open(tmp_path):
    async with Corestore(str(tmp_path / "store")) as store:
        core = await store.get("a")
        await core.append(b"x")
        session = store.session()
        other = await session.get("a")
        await session.close()
        with pytest.raises(SessionClosedError):
            other.length
        assert await core.get(0) == b"x"
    with pytest.raises(SessionClosedError):
        await store.get("a")
    with pytest.raises(SessionClosedError):
        core.length


@trio_test
async def test_reopen_keeps_aliases_and_data(tmp_path):
    path = str(tmp_path / "store")
    async with Corestore(path) as store:
        core = await store.namespace("ns").get("x")
        await core.append([b"1" * 5000, b"2"])
        key, dkey = core.key, core.discovery_key
    storage = CorestoreStorage(path)
    try:
        assert storage.get_alias(Alias("x", child_namespace(bytes(32), "ns"))) == dkey
    finally:
        storage.close()
    async with Corestore(path) as store:
        core = await store.namespace("ns").get("x")
        assert core.key == key and core.length == 2 and await core.get(0) == b"1" * 5000
        assert key in await store.list()


@trio_test
async def test_audit_clean_then_corrupt_block(tmp_path):
    path = str(tmp_path / "store")
    async with Corestore(path) as store:
        core = await store.get("a")
        await core.append([bytes([i]) * 100 for i in range(20)])
        other = await store.get("b")
        await other.append(b"fine")
        results = await store.audit()
        assert len(results) == 2 and all(r.ok for r in results), [r.errors for r in results]
        assert sum(r.blocks for r in results) == 21
        dkey = core.discovery_key
    # Flip a stored block behind the store's back.
    storage = CorestoreStorage(path)
    try:
        hs = storage.resume(dkey)
        tx = hs.write()
        tx.put_block(7, b"\x00" * 100)
        tx.flush()
    finally:
        storage.close()
    async with Corestore(path) as store:
        results = {r.key: r for r in await store.audit()}
        bad = [r for r in results.values() if not r.ok]
        assert len(bad) == 1
        assert bad[0].errors == ["block 7 does not match its tree node"]


@trio_test
async def test_a_read_only_store_follows_the_process_writing_it(tmp_path):
    """A read-only Corestore opens beside the one writing the folder (RocksDB's secondary
    mode) and, on `catch_up()`, moves its open cores to what the writer stored: appends wake
    `wait_append`, a truncation shows as a new fork, and nothing can be written through it."""
    path = str(tmp_path / "store")
    async with Corestore(path) as writer:
        core = await writer.get("log")
        await core.append([b"a", b"b"])
        async with Corestore(path, read_only=True) as reader:
            assert reader.read_only and not writer.read_only
            seen = await reader.get(key=core.key)
            assert (seen.length, await seen.get(1), seen.writable) == (2, b"b", False)
            with pytest.raises(NotWritableError):
                await seen.append(b"c")
            await reader.catch_up()
            assert seen.length == 2  # nothing new: nothing moves
            await core.append([b"c", b"d"])
            assert seen.length == 2  # the reader sees the store as it was, until it catches up
            async with trio.open_nursery() as nursery:
                woken = []

                async def wait() -> None:
                    await seen.wait_append()
                    woken.append(seen.length)

                nursery.start_soon(wait)
                await trio.testing.wait_all_tasks_blocked()
                await reader.catch_up()
            assert woken == [4]
            assert [await seen.get(i) for i in range(4)] == [b"a", b"b", b"c", b"d"]
            assert seen.byte_length == core.byte_length
            await core.truncate(1)
            await core.append(b"e")
            await reader.catch_up()
            assert (seen.length, seen.fork, await seen.get(1)) == (2, core.fork, b"e")
            await writer.close()
            # The next process to write the store overwrites the same head key: a reader that
            # kept what it had replayed from the first one's log would miss that.
            async with Corestore(path) as next_writer:
                again = await next_writer.get("log")
                await again.append(b"f")
            await reader.catch_up()
            assert seen.length == 3
            assert await seen.get(2) == b"f"
    # A reader keeps its own files under the store's readers/ while open; one killed before it
    # could remove them (no such pid) is cleared by the next.
    readers = tmp_path / "store" / "readers"
    left = readers / "999999999-killed"
    left.mkdir()
    async with Corestore(path, read_only=True):
        assert [entry.name.split("-")[0] for entry in readers.iterdir()] == [str(os.getpid())]
    assert list(readers.iterdir()) == []
    with pytest.raises(StorageError, match="no store at"):
        async with Corestore(str(tmp_path / "none"), read_only=True):
            pass
    assert not (tmp_path / "none").exists()  # reading made nothing
