"""The Merkle tree of a core: roots, appends, truncation, tree hashes, byte offsets and seeks.

Pure functions over `TreeNode`s; reading stored nodes is the caller's, passed in as `get_node`
(index -> TreeNode, raising if absent). See `shared/spec/core-crypto.md` §3–§4 and hypercore
`lib/merkle-tree.js`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence

from hyperfs.core import flat_tree
from hyperfs.core.crypto import tree_hash
from hyperfs.core.encoding import TreeNode

GetNode = Callable[[int], TreeNode]

_LEAF = b"\x00"
_PARENT = b"\x01"
_U64 = struct.Struct("<Q")


def append_leaves(
    roots: Sequence[TreeNode],
    length: int,
    blocks: Sequence[bytes],
    leaf_hashes: Sequence[bytes] | None = None,
) -> tuple[list[TreeNode], list[TreeNode]]:
    """Append stored blocks to a tree of `length` blocks with `roots`.

    Returns (every new node to store, the new roots), as `MerkleTreeBatch.append` does.
    `leaf_hashes`, when given, are the blocks' leaf hashes computed elsewhere (in parallel)."""
    new_roots = list(roots)
    nodes: list[TreeNode] = []
    blake2b = hashlib.blake2b
    u64 = _U64.pack
    index = 2 * length
    for i, block in enumerate(blocks):
        size = len(block)
        if leaf_hashes is None:
            h = blake2b(_LEAF, digest_size=32)
            h.update(u64(size))
            h.update(block)
            digest = h.digest()
        else:
            digest = leaf_hashes[i]
        node = TreeNode(index, size, digest)
        nodes.append(node)
        # Merge while the last two roots are siblings: as many times as the block number has
        # trailing 1 bits (its flat-tree depth read as an index).
        for _ in range(flat_tree.depth(index >> 1)):
            left = new_roots.pop()
            size = left.size + node.size
            digest = blake2b(_PARENT + u64(size) + left.hash + node.hash, digest_size=32).digest()
            node = TreeNode((left.index + node.index) >> 1, size, digest)
            nodes.append(node)
        new_roots.append(node)
        index += 2
    return nodes, new_roots


def root_indexes(length: int) -> list[int]:
    """The flat-tree indexes of the roots of a tree of `length` blocks."""
    return flat_tree.full_roots(2 * length)


def roots_at(length: int, get_node: GetNode) -> list[TreeNode]:
    """The roots of the tree at `length` (any length up to the current one), from stored nodes."""
    return [get_node(i) for i in root_indexes(length)]


def hash_at(length: int, get_node: GetNode) -> bytes:
    """The tree hash at `length`."""
    return tree_hash(roots_at(length, get_node))


def byte_length(roots: Iterable[TreeNode]) -> int:
    return sum(root.size for root in roots)


def _size(node: TreeNode, padding: int) -> int:
    """The user bytes under a node: its size less `padding` (encryption) per block."""
    return node.size - padding * flat_tree.count_leaves(node.index) if padding else node.size


def byte_offset(index: int, get_node: GetNode, padding: int = 0) -> int:
    """The byte offset of block `index`: the size of the complete subtrees covering blocks < index."""
    return sum(_size(get_node(i), padding) for i in flat_tree.full_roots(2 * index))


def seek(
    byte_offset_: int, roots: Sequence[TreeNode], get_node: GetNode, padding: int = 0
) -> tuple[int, int]:
    """(block index, offset inside it) of a byte offset; (length, 0) at the end.

    Offsets count user bytes (node sizes less `padding` per block). Raises IndexError past the
    end (callers turn it into their own error)."""
    offset = byte_offset_
    for root in roots:
        size = _size(root, padding)
        if offset >= size:
            offset -= size
            continue
        node = root
        while node.index & 1:
            left = get_node(flat_tree.left_child(node.index))
            left_size = _size(left, padding)
            if offset < left_size:
                node = left
            else:
                offset -= left_size
                node = get_node(flat_tree.right_child(node.index))
        return node.index >> 1, offset
    if offset == 0:
        return (flat_tree.right_span(roots[-1].index) >> 1) + 1 if roots else 0, 0
    raise IndexError(f"byte offset {byte_offset_} is past the end of the tree")


def seek_at(
    byte_offset_: int, guess: int, length: int, find_node: Callable[[int], TreeNode | None], padding: int = 0
) -> tuple[int, int] | None:
    """`seek`'s answer if block `guess` holds the byte, else None (also when a node it needs is
    not stored), from the complete subtrees before the block and its leaf: about a quarter of
    a seek's node reads, for a caller that can tell where a byte most likely is (a file of
    equal blocks)."""
    if not 0 <= guess < length:
        return None
    found: list[TreeNode] = []
    for index in (*flat_tree.full_roots(2 * guess), 2 * guess):
        node = find_node(index)
        if node is None:
            return None
        found.append(node)
    *before, leaf = found
    skip = byte_offset_ - sum(_size(node, padding) for node in before)
    return (guess, skip) if 0 <= skip < _size(leaf, padding) else None


def truncated_nodes(old_length: int, new_length: int) -> tuple[int, int, list[int]]:
    """Which stored nodes a truncation from `old_length` to `new_length` deletes.

    Every node whose right span passes `2*new_length - 2`: the range [2*new_length, 2*old_length)
    and the ancestors of leaf `2*new_length` that sit left of it. Returns (start, end, extra)."""
    head = 2 * new_length
    extra: list[int] = []
    node = head
    while True:
        node = flat_tree.parent(node)
        if flat_tree.right_span(node) > 2 * old_length - 2:
            break
        if node < head:
            extra.append(node)
    return head, 2 * old_length, extra
