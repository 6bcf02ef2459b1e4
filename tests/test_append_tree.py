"""append_tree against the bytes the real append-tree 2.4.4 / hyperdrive 9 append."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperfs.drive.append_tree import (
    EMPTY,
    AppendTree,
    Listing,
    NodeCache,
    Unreadable,
    decode_level,
    decode_node,
    decode_paths,
    encode_paths,
    split,
)
from hyperfs.drive import schema_pb2
from hyperfs.errors import DecodingError, ReadOnlyDriveError
from tests.vectors import load

RANDOM = json.loads((Path(__file__).parent / "data" / "append_tree_random.json").read_text())


def _tree(log: list[bytes], offset: int) -> AppendTree:
    return AppendTree(log.__getitem__, len(log), offset)


def test_drive_vector_blocks_byte_for_byte() -> None:
    """Replays drive.json's steps with its Stat values: every node's bytes (paths too) match."""
    vec = load("drive")
    log = [b"index block"]
    tree = _tree(log, offset=1)
    for step in vec["steps"]:
        (expected,) = (bytes.fromhex(h) for h in step["metadata_blocks_appended"])
        names = split(step["path"])
        if step["op"] in ("writeFile", "mkdir"):
            block = tree.put(names, decode_node(len(log), expected).value)
        else:
            block = tree.delete(names)
        assert block.hex() == expected.hex(), step
        log.append(block)
    for folder, names in vec["readdir_at_end"].items():
        assert sorted(tree.list(split(folder))) == names
        assert sorted(_tree(log, 1).list(split(folder))) == names  # resolved afresh from the log


@pytest.mark.parametrize("index", range(len(RANDOM["sequences"])))
def test_random_sequences_match_js(index: int) -> None:
    """Random puts/dels (paths sharing prefixes, files that are also folders, dels of absent
    names): the same blocks as JS, and the same get/list/diff answers afterwards. Every folder
    is listed before each op, so each op meets cached listings everywhere (one left stale by an
    op would show in a later op's block)."""
    seq = RANDOM["sequences"][index]
    log: list[bytes] = []
    tree = _tree(log, offset=0)
    for op in seq["ops"]:
        for path in seq["reads"]:
            tree.list(split(path))
        names = split(op["name"])
        if op["block"] is None:  # JS appends nothing for a del on an empty tree
            assert tree.head is None
            continue
        block = tree.put(names, op["value"].encode()) if op["op"] == "put" else tree.delete(names)
        assert block.hex() == op["block"], op
        log.append(block)
    fresh = _tree(log, offset=0)
    for path, want in seq["reads"].items():
        for t in (tree, fresh):
            node = t.get(split(path))
            assert (node.value.decode() if node else None) == want["get"], path
            assert t.list(split(path)) == want["list"], path
    for head, want in seq["diffs"].items():  # JS checks out at a head seq: our length is seq + 1
        got = [{"type": c.type, "name": c.name, "version": c.version} for c in tree.checkout(int(head) + 1).diff(tree)]
        assert got == want, head


def test_paths_roundtrip_of_vectors() -> None:
    for step in load("drive")["steps"]:
        for i, h in enumerate(step["metadata_blocks_appended"]):
            node = decode_node(100, bytes.fromhex(h))
            assert encode_paths(100, decode_paths(100, node.paths)) == node.paths


@pytest.mark.parametrize(("width", "filler"), [(3, 0.5), (10, 0.5), (40, 0.02)])
def test_incremental_encodings_match_a_fresh_tree(width: int, filler: float) -> None:
    """Puts and deletions in folders whose entries lie far apart in the log (deltas of one to
    three varint bytes), or close (a wide folder written together): each block a tree with
    warm listings appends, with encodings carried from change to change, is the block a tree
    freshly opened on the same log appends."""
    rng = random.Random(5)
    log: list[bytes] = []
    tree = _tree(log, offset=0)
    names = [f"/d0/n{i}" for i in range(width)] + [f"/d1/{n}" for n in "abc"]
    for step in range(2000):
        if rng.random() < filler:  # filler elsewhere, so the folders' next deltas grow
            op, path = "put", f"/fill/{rng.randrange(50)}"
        else:
            op, path = rng.choice(["put", "del"]), rng.choice(names)
        fresh = _tree(list(log), offset=0)
        if op == "put":
            block, want = tree.put(split(path), b"v"), fresh.put(split(path), b"v")
        elif tree.get(split(path)) is None:
            continue
        else:
            block, want = tree.delete(split(path)), fresh.delete(split(path))
        assert block == want, (step, op, path)
        log.append(block)


def test_listing_without_any_entry_matches_one_encoded_afresh() -> None:
    """Each entry removed from listings whose deltas mix one-byte runs with larger ones: the
    spliced encoding (and where its last delta starts, which the next change to the newest
    entry relies on) is the one a listing of the same entries encodes from scratch."""
    rng = random.Random(7)
    for _ in range(60):
        seq, entries = 0, {}
        for i in range(rng.randrange(1, 40)):
            seq += rng.choice([1] * 12 + [2, 127, 128, 300, 20_000])
            entries[None if i == 0 and rng.random() < 0.5 else f"n{i}"] = seq
        for key in entries:
            listing = Listing(dict(entries))  # `without` spends the listing it is called on
            listing.deltas()
            spliced = listing.without(key)
            fresh = Listing({k: v for k, v in entries.items() if k != key})
            assert spliced.entries == fresh.entries
            assert spliced.deltas() == fresh.deltas(), (entries, key)
            if fresh.entries:
                newest = next(reversed(fresh.entries))
                ours, theirs = spliced.replaced(newest, seq + 1), fresh.replaced(newest, seq + 1)
                assert (ours[0], ours[1].deltas()) == (theirs[0], theirs[1].deltas()), (entries, key)


@given(st.lists(st.integers(0, 12), min_size=1, max_size=60), st.lists(st.sampled_from([1, 1, 1, 2, 200, 20_000]), min_size=60, max_size=60))
def test_listing_replaced_in_place_matches_one_encoded_afresh(keys: list[int], gaps: list[int]) -> None:
    """A chain of puts, each taking the last listing over in place (a new name, the newest
    entry again, an older one, the folder's own entry as None): every level and every new
    listing's deltas are what a listing of the same entries encodes from scratch. The shared
    EMPTY listing the chain starts from stays empty."""
    listing, seq = EMPTY, 0
    for key, gap in zip(keys, gaps):
        name = None if key == 0 else f"n{key}"
        seq += gap
        fresh = Listing(dict(listing.entries))
        want_level, want = fresh.replaced(name, seq)
        level, listing = listing.replaced(name, seq)
        assert level == want_level
        assert listing.entries == want.entries and list(listing.entries) == list(want.entries)
        assert listing.deltas() == Listing(dict(listing.entries)).deltas()
    assert EMPTY.entries == {} and EMPTY.deltas() == bytearray()


def test_paths_of_far_apart_entries() -> None:
    """Deltas past one varint byte (a folder whose entries were written far apart in the log)."""
    seq = 3_000_000
    levels = [[1, 129, 16_513, 2_113_665, seq], [seq - 200, seq]]
    paths = encode_paths(seq, levels)
    # header 1 (each level ends with seq), then per level the count and the LEB128 deltas with
    # seq left out: 1, 128, 16384, 2097152 | 2999800 (the first of a level is absolute)
    assert paths == bytes.fromhex("01" "04" "01" "8001" "808001" "80808001" "01" "f88bb701")
    assert decode_paths(seq, paths) == levels
    mixed = [[5, 6, 7, 300, 301, 302, 20_000, 20_001]]
    assert decode_paths(20_001, encode_paths(20_001, mixed)) == mixed


@given(
    st.lists(st.lists(st.integers(min_value=0, max_value=300_000), max_size=40), min_size=1, max_size=6),
    st.booleans(),
)
def test_one_level_decodes_as_all_of_them_do(levels: list[list[int]], ends_with_seq: bool) -> None:
    seq = 300_001
    levels = [sorted(level) + [seq] if ends_with_seq else sorted(level) for level in levels]
    paths = encode_paths(seq, levels)
    everything = decode_paths(seq, paths)
    for depth in range(len(everything) + 2):
        assert decode_level(seq, paths, depth) == (everything[depth] if depth < len(everything) else None)


@pytest.mark.parametrize(
    "paths",
    [
        b"\x01\x02\x80",  # truncated in the list stepped over
        b"\x01\x03\x81\x81",  # the stepped-over list counts more entries than bytes remain
        b"\x01\x01\x01\x01\x07",  # the list decoded names a later entry
    ],
)
def test_a_level_behind_malformed_ones_is_refused(paths: bytes) -> None:
    with pytest.raises(DecodingError):
        decode_level(5, paths, 1)


@pytest.mark.parametrize(
    "paths",
    [
        b"",  # no header
        b"\x01\x02\x80",  # truncated varint
        b"\x01\x05\x01",  # count larger than what follows
        b"\x00\x01\x07",  # names entry 7 from node 5
        b"\x01" + b"\xff" * 11,  # overlong varint
    ],
)
def test_malformed_paths_rejected(paths: bytes) -> None:
    with pytest.raises(DecodingError):
        decode_paths(5, paths)


def test_hostile_log_does_not_crash_lookups() -> None:
    """A head that is no node fails the listing it starts from; a node whose index names an
    entry before the log's start (the Index block) fails only that entry, which no name reaches."""
    log: list[bytes] = [b"idx"]
    log.append(_tree(log, 1).put(("a", "b"), b"v"))
    log.append(b"\xff\xff\xff")
    with pytest.raises(DecodingError):
        _tree(log, 1).list(())
    log[2] = schema_pb2.Node(name="/x", value=b"v", paths=b"\x00\x01\x00").SerializeToString()
    tree = _tree(log, 1)
    assert tree.list(()) == [] and tree.get(("x",)) is None and tree.get(("a", "b")) is None
    assert tree.listing(()).entries == {Unreadable(0): 0}


def test_checkout_history_diff_path() -> None:
    log: list[bytes] = [b"idx"]
    tree = _tree(log, 1)
    for names, value in ((("foo",), b"1"), (("bar", "x"), b"2"), (("foo",), b"3")):
        log.append(tree.put(names, value))
    log.append(tree.delete(("bar", "x")))
    old = tree.checkout(3)
    assert old.get(("foo",)).value == b"1" and old.get(("bar", "x")).value == b"2"
    assert tree.get(("bar", "x")) is None and tree.list(()) == ["foo"]
    with pytest.raises(ReadOnlyDriveError):
        old.put(("z",), b"")
    assert [(c.type, c.name, c.version) for c in tree.history()] == [
        ("put", "/foo", 1),
        ("put", "/bar/x", 2),
        ("put", "/foo", 3),
        ("del", "/bar/x", 4),
    ]
    changes = {(c.type, c.name, c.version) for c in old.diff(tree)}
    assert changes == {("put", "/foo", 3), ("del", "/foo", 1), ("del", "/bar/x", 2)}
    assert tree.diff(tree) == []
    assert tree.path(("foo",)) == [4, 3]


def test_the_nodes_and_listings_a_tree_keeps_stay_within_their_bounds() -> None:
    """A folder n wide has nodes that each index all n entries: reading every entry of one
    keeps no more decoded nodes than the cache's bound (all of them would weigh ~n² bytes),
    and a node dropped from the cache reads back the same. A node written is kept until the
    log has it, whatever the bound (it could not be read back before). Listings, one cached
    for each entry written, stay within theirs too."""
    width, bound, listing_bound = 1500, 100_000, 400_000  # the folder's listing alone: 150 KB
    log: list[bytes] = [b"idx"]

    def read(seq: int) -> bytes:
        assert seq < len(log), f"entry {seq} read before the log has it"
        return log[seq]

    writer = AppendTree(read, 1, 1, NodeCache(bound))
    writer._listings.max_bytes = listing_bound
    pending = [writer.put(("wide", f"entry-{i:04}"), f"value {i}".encode()) for i in range(200)]
    # 200 written, none in the log yet: every one is still there to read.
    assert writer.nodes.bytes == 0
    assert [writer.get(("wide", f"entry-{i:04}")).value for i in range(200)] == [f"value {i}".encode() for i in range(200)]
    log.extend(pending)
    writer.nodes.stored(len(log))
    assert writer.nodes.bytes <= bound
    for i in range(200, width):
        log.append(writer.put(("wide", f"entry-{i:04}"), f"value {i}".encode()))
        writer.nodes.stored(len(log))
        assert writer.nodes.bytes <= bound and writer._listings.bytes <= listing_bound
    assert sum(len(block) for block in log) > 10 * bound  # the whole log would not fit

    cache = NodeCache(bound)
    tree = AppendTree(read, len(log), 1, cache)
    tree._listings.max_bytes = listing_bound
    for _ in range(2):  # the second pass reads back what the first dropped
        assert tree.list(("wide",)) == [f"entry-{i:04}" for i in range(width)]
        for i in range(width):
            assert tree.get(("wide", f"entry-{i:04}")).value == f"value {i}".encode()
            assert cache.bytes <= bound
        assert tree._listings.bytes <= listing_bound
    assert 0 < len(cache) < width / 10
    # What stays is what was used last.
    assert cache.get(len(log) - 1) is not None and cache.get(1) is None


def test_dropped_listings_leave_the_index_of_cached_ones_right() -> None:
    """Listings dropped for room leave no trace in the index a deletion uses to find the
    cached ones under a folder, and a deletion still forgets every listing under it."""
    log: list[bytes] = [b"idx"]
    tree = AppendTree(log.__getitem__, 1, 1)
    tree._listings.max_bytes = 6_000  # a few listings
    for a in range(6):
        for b in range(4):
            log.append(tree.put((f"a{a}", f"b{b}", "f"), b"x"))
    tree.nodes.stored(len(log))
    cached = set(tree._listings._items)
    indexed = {names for below in tree._cached_below._children.values() for names in below}
    # Each name indexed has a cached listing at it or under it, and each cached one is indexed.
    assert all(any(c[: len(n)] == n for c in cached) for n in indexed)
    assert {c for c in cached if c} <= indexed
    # A deletion forgets the listings under the folder its levels end at.
    assert tree.listing(("a5", "b0", "f")).entries and ("a5", "b0", "f") in tree._listings
    log.append(tree.delete(("a5", "b0", "f")))
    assert not any(c[:2] == ("a5", "b0") for c in tree._listings._items)
    assert tree.list(("a5", "b0")) is None and tree.get(("a5", "b0", "f")) is None
    assert tree.get(("a4", "b3", "f")).value == b"x" and tree.list(("a5",)) == ["b1", "b2", "b3"]
