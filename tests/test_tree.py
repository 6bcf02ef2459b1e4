"""tree.json: leaves, every stored node, roots, tree hashes, signatures, truncations; offsets, seek."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperfs.core import merkle
from hyperfs.core.crypto import key_pair, leaf_hash, tree_hash
from hyperfs.core.encoding import TreeNode
from hyperfs.core.manifest import manifest_from_dict, manifest_hash
from hyperfs.core.verifier import decode_multisig, sign_head, signable, verify_head
from tests.vectors import block, block_fork, load

V = load("tree")
SIZES = V["block_sizes"]
BLOCKS = [block(i, s) for i, s in enumerate(SIZES)]
KP = key_pair(bytes.fromhex(V["core"]["seed"]))
MANIFEST = manifest_from_dict(V["core"]["manifest"])
KEY = manifest_hash(MANIFEST)


def node(d):
    return TreeNode(d["index"], d["size"], bytes.fromhex(d["hash"]))


def build(blocks, length=0, roots=(), nodes=None):
    nodes = dict(nodes or {})
    new, roots = merkle.append_leaves(list(roots), length, blocks)
    nodes.update((n.index, n) for n in new)
    return nodes, roots


def test_core_identity():
    assert KP.public_key.hex() == V["core"]["publicKey"]
    assert KEY.hex() == V["core"]["key"]


def test_leaves():
    nodes, _ = build(BLOCKS)
    for leaf in V["leaves"]:
        assert nodes[leaf["treeIndex"]].hash.hex() == leaf["leafHash"]
        assert nodes[leaf["treeIndex"]].size == SIZES[leaf["index"]]


def test_leaf_hash_of_any_buffer():
    # Big blocks given as bytes go through libsodium, the rest through hashlib: one hash.
    assert max(SIZES) >= 32 * 1024
    for leaf in V["leaves"]:
        data = BLOCKS[leaf["index"]]
        for buffer in (bytes(data), bytearray(data), memoryview(bytes(data))):
            assert leaf_hash(buffer).hex() == leaf["leafHash"]


@pytest.mark.parametrize("cp", V["checkpoints"], ids=lambda c: f"length {c['length']}")
def test_checkpoint(cp):
    length = cp["length"]
    nodes, roots = build(BLOCKS[:length])
    assert sorted(nodes.values()) == [node(n) for n in cp["nodes"]]
    assert roots == [node(r) for r in cp["roots"]]
    assert merkle.byte_length(roots) == cp["byteLength"]
    th = tree_hash(roots)
    assert th.hex() == cp["treeHash"]
    assert merkle.roots_at(length, nodes.__getitem__) == roots
    assert signable(MANIFEST, KEY, th, length, cp["fork"]).hex() == cp["signable"]
    sig = sign_head(MANIFEST, KEY, KP.secret_key, th, length, cp["fork"])
    assert sig.hex() == cp["signature_stored"] and len(sig) == 68
    decoded = decode_multisig(sig)
    assert decoded.proofs[0].signature.hex() == cp["signature_ed25519"]
    assert verify_head(MANIFEST, KEY, th, length, cp["fork"], sig)
    assert not verify_head(MANIFEST, KEY, th, length, cp["fork"] + 1, sig)


def test_tree_hash_at_every_length():
    nodes, _ = build(BLOCKS)
    for case in V["treeHashes"]:
        assert merkle.root_indexes(case["length"]) == case["roots"]
        assert merkle.hash_at(case["length"], nodes.__getitem__).hex() == case["treeHash"]


def test_byte_offsets_and_seek():
    nodes, roots = build(BLOCKS)
    get = nodes.__getitem__
    offsets = [sum(SIZES[:i]) for i in range(len(SIZES) + 1)]
    for i, off in enumerate(offsets):
        assert merkle.byte_offset(i, get) == off
    total = offsets[-1]
    for target in sorted({0, 1, 5, 6, 70, 425, 426, 1681, 67000, total - 17, total - 1}):
        index, rel = merkle.seek(target, roots, get)
        # The block holding the byte: the last non-empty block starting at or before it.
        assert offsets[index] + rel == target
        assert 0 <= rel < SIZES[index]
    assert merkle.seek(total, roots, get) == (len(SIZES), 0)
    with pytest.raises(IndexError):
        merkle.seek(total + 1, roots, get)


@given(
    st.lists(st.integers(0, 300), min_size=1, max_size=40),
    st.data(),
)
def test_a_seek_from_a_guessed_block_agrees_with_the_walk_or_declines(sizes, data):
    """`seek_at` gives `seek`'s answer when the guessed block holds the byte, None otherwise,
    and None when a node it needs is not stored."""
    blocks = [bytes(size) for size in sizes]
    nodes, roots = build(blocks)
    total = sum(sizes)
    if total == 0:
        return
    target = data.draw(st.integers(0, total - 1))
    walked = merkle.seek(target, roots, nodes.__getitem__)
    assert merkle.seek_at(target, walked[0], len(sizes), nodes.get) == walked
    guess = data.draw(st.integers(-2, len(sizes) + 2))
    assert merkle.seek_at(target, guess, len(sizes), nodes.get) in (walked, None)
    assert (merkle.seek_at(target, guess, len(sizes), nodes.get) == walked) == (guess == walked[0])
    hidden = data.draw(st.sampled_from(sorted(nodes)))
    missing = merkle.seek_at(target, walked[0], len(sizes), lambda i: None if i == hidden else nodes.get(i))
    assert missing in (walked, None)


def test_truncations():
    """Replays truncate(10), append 2 fork blocks, truncate(3), truncate(2, fork 9)."""
    nodes, roots = build(BLOCKS)
    length = len(BLOCKS)
    for step in V["truncations"]:
        head = step["head"]
        if step["op"].startswith("truncate"):
            start, end, extra = merkle.truncated_nodes(length, head["length"])
            for i in [i for i in nodes if start <= i < end] + extra:
                del nodes[i]
            length = head["length"]
            roots = merkle.roots_at(length, nodes.__getitem__)
        else:
            new = [block_fork(length + j, 7 if j == 0 else 9) for j in range(2)]
            nodes, roots = build(new, length, roots, nodes)
            length += 2
        assert sorted(nodes.values()) == [node(n) for n in step["nodes"]], step["op"]
        assert roots == [node(r) for r in head["roots"]]
        assert merkle.byte_length(roots) == head["byteLength"]
        th = tree_hash(roots)
        assert th.hex() == head["treeHash"]
        sig = sign_head(MANIFEST, KEY, KP.secret_key, th, length, head["fork"])
        assert sig.hex() == head["signature_stored"]
        assert signable(MANIFEST, KEY, th, length, head["fork"]).hex() == head["signable"]
