"""Hypercore on a real RocksDB: tree.json and encryption.json replayed through the public API,
sparse gets, streams, snapshots, sessions, notifications, proofs from a writer to a reader, and
named errors for bad input and damaged storage."""

import random
from dataclasses import replace

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from hyperfs.core import Corestore, Hypercore
from hyperfs.core.hypercore import append_together, cut
from hyperfs.core.crypto import key_pair
from hyperfs.core.encoding import TreeNode
from hyperfs.core.manifest import default_signer_manifest
from hyperfs.core.proof import generate_proof, verify_proof
from hyperfs.core.protocol.messages import IndexNodes, Request, UpgradeRequest
from hyperfs.core.storage import CorestoreStorage
from hyperfs.core.storage import keys as storage_keys
from hyperfs.core.verifier import verify_head
from hyperfs.errors import (
    BlockNotAvailableError,
    CoreNotFoundError,
    CorruptStorageError,
    InvalidArgumentError,
    InvalidKeyError,
    NotWritableError,
    RequestTimeoutError,
    SessionClosedError,
    VerificationError,
)
from tests.drive_store import trio_test
from tests.vectors import block, block_fork, load

TREE = load("tree")
ENC = load("encryption")


def nodes_of(core):
    return sorted(core.state.storage.create_tree_node_stream())


def as_nodes(items):
    return [TreeNode(n["index"], n["size"], bytes.fromhex(n["hash"])) for n in items]


async def open_core(path, seed=1, **kwargs):
    core = Hypercore(str(path), key_pair=key_pair(bytes([seed]) * 32), **kwargs)
    await core.ready()
    return core


@trio_test
async def test_tree_vectors_through_append_and_truncate(tmp_path):
    core = await open_core(tmp_path)
    assert core.key.hex() == TREE["core"]["key"] and core.id == TREE["core"]["id"]
    assert core.discovery_key.hex() == TREE["core"]["discoveryKey"]
    sizes = TREE["block_sizes"]
    for cp in TREE["checkpoints"]:
        blocks = [block(i, sizes[i]) for i in range(core.length, cp["length"])]
        length, byte_length = await core.append(blocks)
        assert (length, byte_length) == (cp["length"], cp["byteLength"])
        head = core.head
        assert head.tree_hash.hex() == cp["treeHash"] and head.fork == cp["fork"]
        assert head.signature.hex() == cp["signature_stored"]
        assert core.signable().hex() == cp["signable"]
        assert nodes_of(core) == as_nodes(cp["nodes"])
    for case in TREE["treeHashes"]:
        assert (await core.tree_hash(case["length"])).hex() == case["treeHash"]
    for step in TREE["truncations"]:
        head = step["head"]
        if step["op"] == "truncate(2, { fork: 9 })":
            await core.truncate(2, fork=9)
        elif step["op"].startswith("truncate"):
            await core.truncate(head["length"])
        else:
            await core.append([block_fork(core.length, 7), block_fork(core.length + 1, 9)])
        assert (core.length, core.fork, core.byte_length) == (head["length"], head["fork"], head["byteLength"])
        assert core.head.signature.hex() == head["signature_stored"]
        assert nodes_of(core) == as_nodes(step["nodes"])
    await core.close()
    core = await open_core(tmp_path)  # reopen: same head
    assert (core.length, core.fork) == (2, 9)
    assert await core.get(1) == block(1, sizes[1])
    await core.close()


@trio_test
async def test_encryption_vectors(tmp_path):
    c = ENC["core"]
    ek = bytes.fromhex(c["encryptionKey"])
    core = await open_core(tmp_path, seed=2, encryption_key=ek)
    assert core.key.hex() == c["key"] and core.padding == 8 and core.encryption_key == ek
    plain = [block(b["index"], ENC["block_sizes"][b["index"]]) for b in c["blocks"]]
    length, byte_length = await core.append(plain)
    assert byte_length == c["head"]["byteLength_user"] == sum(map(len, plain))
    assert core.head.tree_hash.hex() == c["head"]["treeHash"]
    assert core.head.signature.hex() == c["head"]["signature_stored"]
    for b, p in zip(c["blocks"], plain):
        stored = core.read_block_sync(b["index"])
        assert stored[:8].hex() == b["padding_hex"]
        assert await core.get(b["index"]) == p
    assert await core.seek(6) == (3, 0)  # user sizes 0, 1, 5, 100: padding is not counted
    assert await core.seek(3) == (2, 2)
    ciphertext = await core.get(3, decrypt=False)
    assert ciphertext == core.read_block_sync(3)[8:] and ciphertext != plain[3]
    after = c["after_truncate_4_and_append"]
    await core.truncate(4)
    await core.append([block_fork(4, 10), block_fork(5, 0)])
    assert core.fork == after["fork"]
    for b in after["blocks"]:
        assert core.read_block_sync(b["index"]).hex() == b["stored"]["hex"]
    assert core.head.signature.hex() == after["head"]["signature_stored"]
    await core.close()
    core = await open_core(tmp_path, seed=2)  # the encryption key is stored with the core
    assert await core.get(4) == block_fork(4, 10)
    await core.close()
    with pytest.raises(InvalidKeyError, match="different encryption key"):
        await open_core(tmp_path, seed=2, encryption_key=bytes(32))


@trio_test
async def test_get_has_clear_and_sparse_waits(tmp_path):
    core = await open_core(tmp_path)
    await core.append([b"a", b"b", b"c", b"d"])
    assert await core.has(0, 4) and not await core.has(0, 5)
    with pytest.raises(BlockNotAvailableError):
        await core.get(4, wait=False)
    with pytest.raises(RequestTimeoutError):
        await core.get(4, timeout=0.05)
    await core.clear(1, 3)
    assert not await core.has(1) and await core.has(3)
    assert core.contiguous_length == 1 and list(core.local_ranges()) == [(0, 1), (3, 4)]
    with pytest.raises(BlockNotAvailableError):
        await core.get(2, wait=False)
    assert await core.tree_hash() == core.head.tree_hash  # the tree still proves cleared blocks
    with pytest.raises(InvalidArgumentError):
        await core.get(-1)
    got = []

    async def waiter():
        got.append(await core.get(4, timeout=10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(0.01)
        await core.append(b"e")
    assert got == [b"e"]
    await core.close()


@trio_test
async def test_contiguous_length_follows_appends_clears_and_truncations(tmp_path):
    """The first missing block, kept from one change to the next (not rescanned from block 0),
    agrees with a scan of what is stored after every kind of change, and after a reopen."""
    core = await open_core(tmp_path)

    async def check() -> None:
        stored = [await core.has(i) for i in range(core.length)]
        assert core.contiguous_length == (stored.index(False) if False in stored else core.length)

    await core.append([b"x"] * 40_000)  # past one 32,768-block bitfield page
    await check()
    await core.clear(33_000, 33_010)
    await check()
    await core.append([b"y"] * 3)  # the gap stays the first missing block
    await check()
    await core.truncate(20_000)  # below the gap: everything left is stored again
    await check()
    assert core.contiguous_length == 20_000
    await core.append(b"z")
    await check()
    await core.clear(5, 6)
    await core.truncate(10)
    await check()
    assert core.contiguous_length == 5
    await core.close()
    core = await open_core(tmp_path)
    await check()
    await core.close()


@trio_test
async def test_seek_streams_and_live(tmp_path):
    core = await open_core(tmp_path)
    blocks = [bytes([65 + i]) * (i + 1) for i in range(40)]  # sizes 1..40
    await core.append(blocks)
    data = b"".join(blocks)
    for offset in (0, 1, 2, 3, 100, 500, len(data) - 1):
        index, rel = await core.seek(offset)
        assert blocks[index][rel] == data[offset]
    assert await core.seek(len(data)) == (40, 0)
    with pytest.raises(InvalidArgumentError):
        await core.seek(len(data) + 1)
    assert [b async for b in core.read_stream(5, 9)] == blocks[5:9]
    assert b"".join([b async for b in core.byte_stream(17, 300)]) == data[17:317]
    assert b"".join([b async for b in core.byte_stream()]) == data
    seen = []

    async def follow():
        async for b in core.read_stream(38, live=True):
            seen.append(b)
            if len(seen) == 4:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        await trio.sleep(0.01)
        await core.append([b"x", b"y"])
    assert seen == blocks[38:] + [b"x", b"y"]
    await core.close()


@trio_test
async def test_blocks_sized_tells_a_run_of_equal_blocks_from_its_leaves(tmp_path):
    """By the stored leaves: equal blocks, one that differs (even with the run's total size
    unchanged), an encrypted core's padding left out, and a leaf not stored here."""
    core = await open_core(tmp_path / "plain")
    await core.append([b"a" * 10] * 5 + [b"b" * 9, b"c" * 11, b"d" * 3])
    assert core.blocks_sized_sync(0, 5, 10) and core.blocks_sized_sync(2, 4, 10)
    assert not core.blocks_sized_sync(0, 6, 10) and not core.blocks_sized_sync(4, 7, 10)
    assert core.blocks_sized_sync(5, 6, 9) and core.blocks_sized_sync(6, 6, 10)  # an empty run: yes
    secret = await open_core(tmp_path / "enc", seed=2, encryption_key=bytes(range(32)))
    await secret.append([b"e" * 10] * 4)
    assert secret.padding and secret.blocks_sized_sync(0, 4, 10)
    tx = core.state.storage.write()
    tx.delete_tree_node(2 * 3)  # as a sparse core may lack it
    tx.flush()
    assert not core.blocks_sized_sync(0, 5, 10) and core.blocks_sized_sync(0, 3, 10)
    await core.close()
    await secret.close()


@given(
    st.lists(st.binary(min_size=1, max_size=9), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=8),
    st.integers(min_value=1, max_value=80),
)
def test_cut_takes_a_byte_range_of_blocks_and_says_where_it_ends(blocks, skip, size):
    skip %= len(blocks[0])
    data, index, rel = cut(blocks, 10, skip, size)
    assert data == b"".join(blocks)[skip : skip + size]
    ends = [sum(map(len, blocks[: i + 1])) for i in range(len(blocks))]
    consumed = skip + len(data)
    whole = sum(end <= consumed for end in ends)  # blocks read to their end
    assert (index, rel) == (10 + whole, consumed - (ends[whole - 1] if whole else 0))


@trio_test
async def test_read_bytes_joins_any_range_and_waits_for_missing_blocks(tmp_path):
    core = await open_core(tmp_path)
    blocks = [bytes([65 + i % 26]) * (i * 7 % 23 + 1) for i in range(60)]  # uneven sizes
    await core.append(blocks)
    data = b"".join(blocks)
    rng = random.Random(5)
    ranges = [(0, 1), (0, len(data)), (3, 100), (len(data) - 3, 10)]
    ranges += [(rng.randrange(len(data)), rng.randrange(1, 300)) for _ in range(40)]
    for offset, size in ranges:
        index, skip = await core.seek(offset)
        after = await core.seek(min(offset + size, len(data)))
        for got in (await core.read_bytes(index, skip, size, 60), core.read_bytes_sync(index, skip, size, 60)):
            assert got == (data[offset : offset + size], *after)
    assert await core.read_bytes(0, 0, len(data), 3) == (b"".join(blocks[:3]), 3, 0)  # `end` bounds it
    await core.clear(20, 21)
    with pytest.raises(BlockNotAvailableError):
        core.read_bytes_sync(19, 0, 100, 60)
    with trio.move_on_after(0.2) as waited:
        await core.read_bytes(19, 0, 100, 60)  # waits for a peer to bring block 20
    assert waited.cancelled_caught
    await core.close()


@trio_test
async def test_snapshots_and_sessions(tmp_path):
    core = await open_core(tmp_path)
    await core.append([b"one", b"two", b"three"])
    snap = core.snapshot()
    session = core.session()
    await core.truncate(1)
    await core.append(b"TWO")
    assert (snap.length, snap.fork) == (3, 0) and await snap.get(2) == b"three"
    assert await snap.get(1) == b"two"
    assert (session.length, session.fork) == (2, 1) and await session.get(1) == b"TWO"
    with pytest.raises(NotWritableError):
        await snap.append(b"x")
    with pytest.raises(BlockNotAvailableError):
        await snap.get(3)
    await snap.close()
    await session.close()
    assert await core.get(0) == b"one"  # the other sessions stay open
    await core.close()
    with pytest.raises(SessionClosedError):
        await core.get(0)
    with pytest.raises(SessionClosedError):
        core.length


@trio_test
async def test_notifications(tmp_path):
    core = await open_core(tmp_path)
    appends = core.on_append()
    truncates = core.on_truncate()
    woke = []

    async def wait():
        await core.wait_append()
        woke.append(core.length)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(0.01)
        await core.append([b"a", b"bb"])
    await core.truncate(1)
    assert woke == [2]
    assert appends.receive_nowait() == (2, 3)
    assert appends.receive_nowait() == (1, 1)  # a truncation also changes the length
    assert truncates.receive_nowait() == (1, 1)
    await core.close()


@trio_test
async def test_big_batch_runs_threaded_and_reads_back(tmp_path):
    core = await open_core(tmp_path)
    blocks = [bytes([i]) * 65536 for i in range(16)]
    assert await core.append(blocks) == (16, 16 * 65536)
    assert [b async for b in core.read_stream()] == blocks
    await core.close()


@trio_test
async def test_append_together_appends_to_several_cores_at_once(tmp_path):
    path = str(tmp_path / "store")
    async with Corestore(path) as store:
        a, b, c = await store.get("a"), await store.get("b"), await store.get("c")
        await a.append(b"a0")
        assert await append_together([(a, [b"a1", b"a2"]), (b, b"b0"), (c, [])]) == [(3, 6), (1, 2), (0, 0)]
        for core in (a, b):  # each head signed for its own new length
            state = core.state
            assert verify_head(core.manifest, core.key, state.tree_hash, state.length, state.fork, state.signature)
        with pytest.raises(InvalidArgumentError):
            await append_together([(a, b"x"), (a, b"y")])
        with pytest.raises(InvalidArgumentError):
            await append_together([(a, [b"x", 3])])
        assert a.length == 3
    async with Corestore(path) as store, Corestore(str(tmp_path / "other")) as other:
        a, b = await store.get("a"), await store.get("b")
        assert (a.length, b.length) == (3, 1)
        assert [await a.get(i) for i in range(3)] == [b"a0", b"a1", b"a2"] and await b.get(0) == b"b0"
        with pytest.raises(InvalidArgumentError):
            await append_together([(a, b"x"), (await other.get("z"), b"y")])
        reader = await store.get(key=(await other.get("z")).key)
        with pytest.raises(NotWritableError):
            await append_together([(a, b"x"), (reader, b"y")])
        assert a.length == 3  # nothing appended anywhere


@trio_test
async def test_reader_by_key_and_proofs_from_the_writer(tmp_path):
    async with Corestore(str(tmp_path / "w")) as ws, Corestore(str(tmp_path / "r")) as rs:
        writer = await ws.get("log")
        await writer.append([b"block %d" % i for i in range(10)])
        reader = await rs.get(key=writer.key, manifest=default_signer_manifest(writer.key_pair.public_key))
        assert not reader.writable and reader.length == 0
        with pytest.raises(NotWritableError):
            await reader.append(b"nope")
        with pytest.raises(NotWritableError):
            await reader.truncate(0)

        async def serve(index, upgrade):
            request = Request(
                id=1, fork=reader.fork, block=IndexNodes(index, 0 if upgrade else 2),
                upgrade=UpgradeRequest(reader.length, writer.length - reader.length) if upgrade else None,
            )
            data = await trio.to_thread.run_sync(
                generate_proof, writer, request, writer.length, writer.fork, writer.head.signature
            )
            state = reader.state
            verified = verify_proof(
                data, length=reader.length, fork=reader.fork, roots=state.roots,
                stored_node=lambda i: reader.read_nodes_sync([i]).get(i),
                check_signature=state.verify_head,
            )
            await reader.apply_proof(verified)

        got = []

        async def wants():
            got.append(await reader.get(7, timeout=10))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wants)
            await trio.sleep(0.01)
            await serve(7, upgrade=True)
        assert got == [b"block 7"] and reader.length == 10 and reader.head == writer.head
        await serve(3, upgrade=False)
        assert await reader.get(3) == b"block 3" and list(reader.local_ranges()) == [(3, 4), (7, 8)]
        results = {r.key: r for r in await rs.audit()}
        assert results[writer.key].ok and results[writer.key].blocks == 2


@trio_test
async def test_reader_learns_the_manifest_from_a_proof(tmp_path):
    async with Corestore(str(tmp_path / "w")) as ws:
        writer = await ws.get("log")
        await writer.append([b"a", b"b"])
        request = Request(id=1, block=IndexNodes(1, 0), upgrade=UpgradeRequest(0, 2))
        data = generate_proof(writer, request, writer.length, writer.fork, writer.head.signature)
        manifest, key = writer.manifest, writer.key
    async with Corestore(str(tmp_path / "r")) as rs:
        reader = await rs.get(key=key)
        assert reader.manifest is None
        verified = verify_proof(
            data, length=0, fork=0, roots=[], stored_node=lambda i: None,
            check_signature=lambda th, n, f, sig: verify_head(manifest, key, th, n, f, sig),
        )
        await reader.apply_proof(replace(verified, manifest=manifest))
        assert reader.manifest == manifest and reader.length == 2 and await reader.get(1) == b"b"
    async with Corestore(str(tmp_path / "r")) as rs:
        reader = await rs.get(key=key)
        assert reader.manifest == manifest and reader.length == 2 and not reader.writable


@trio_test
async def test_bad_keys_and_arguments(tmp_path):
    with pytest.raises(InvalidKeyError):
        await Hypercore(str(tmp_path), key=b"\x01" * 31).ready()
    with pytest.raises(InvalidKeyError):
        await Hypercore(str(tmp_path), key="not a key at all").ready()
    kp = key_pair(b"\x01" * 32)
    with pytest.raises(InvalidKeyError):
        await Hypercore(str(tmp_path), key=b"\x02" * 32, key_pair=kp).ready()
    core = await open_core(tmp_path)
    with pytest.raises(InvalidArgumentError):
        await core.append(["text is not bytes"])
    with pytest.raises(InvalidArgumentError):
        await core.truncate(5)
    await core.close()


def _damage(path, discovery_key, change):
    storage = CorestoreStorage(str(path))
    try:
        hs = storage.resume(discovery_key)
        storage.rocks.commit([change(hs.core.data_pointer)])
    finally:
        storage.close()


@trio_test
async def test_damaged_storage_raises_named_errors(tmp_path):
    core = await open_core(tmp_path)
    await core.append([b"a" * 10, b"b" * 10, b"c" * 10])
    dkey = core.discovery_key
    await core.close()

    # A block that does not match its tree node.
    _damage(tmp_path, dkey, lambda p: (storage_keys.data_block(p, 1), b"X" * 10, None))
    core = await open_core(tmp_path)
    with pytest.raises(VerificationError, match="block 1 does not match its tree node"):
        core.verify_block_sync(1, core.read_block_sync(1))
    core.verify_block_sync(0, core.read_block_sync(0))
    await core.close()

    # A tree node that no longer hashes to the signed head.
    _damage(tmp_path, dkey, lambda p: (storage_keys.data_tree(p, 4), bytes([4, 10]) + b"\x00" * 32, None))
    with pytest.raises(CorruptStorageError, match="do not hash to the signed head"):
        await open_core(tmp_path)

    # A missing root.
    _damage(tmp_path, dkey, lambda p: (storage_keys.data_tree(p, 4), None, None))
    with pytest.raises(CorruptStorageError, match="tree node 4"):
        await open_core(tmp_path)

    # Garbage where the head is.
    _damage(tmp_path, dkey, lambda p: (storage_keys.data_head(p), b"\xff\xff", None))
    with pytest.raises(CorruptStorageError, match="head"):
        await open_core(tmp_path)


@trio_test
async def test_info_and_purge(tmp_path):
    async with Corestore(str(tmp_path / "store")) as store:
        core = await store.get("gone")
        await core.append([b"abc", b"de"])
        info = await core.info(storage=True)
        assert info["key"] == core.key and info["length"] == 2 and info["byte_length"] == 5
        assert info["contiguous_length"] == 2 and info["fork"] == 0 and info["storage"]["blocks"] == 5
        assert info["manifest"]["signers"][0]["publicKey"] == core.key_pair.public_key.hex()
        key, dkey = core.key, core.discovery_key
        await core.purge()
        with pytest.raises(SessionClosedError):
            core.length
        with pytest.raises(CoreNotFoundError):
            await store.get(discovery_key=dkey)
        assert key not in await store.list()
        again = await store.get("gone")
        assert again.key == key and again.length == 0
