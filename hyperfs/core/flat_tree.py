"""flat-tree: a binary tree laid out in a flat list (blocks at even indexes, parents at odd ones).

A node at depth `d` and offset `o` has index `(2*o + 1) * 2^d - 1`. Pure integer math, as in the
npm package flat-tree 1.x; see `shared/spec/core-crypto.md` §3.
"""

from __future__ import annotations


def depth(i: int) -> int:
    """Number of trailing 1 bits of `i`."""
    return ((i + 1) & -(i + 1)).bit_length() - 1


def offset(i: int, d: int | None = None) -> int:
    if not i & 1:
        return i >> 1
    if d is None:
        d = depth(i)
    return ((i + 1) >> d) - 1 >> 1


def index(d: int, o: int) -> int:
    return ((o << 1) + 1 << d) - 1


def parent(i: int) -> int:
    d = depth(i)
    return index(d + 1, offset(i, d) >> 1)


def sibling(i: int) -> int:
    d = depth(i)
    return index(d, offset(i, d) ^ 1)


def uncle(i: int) -> int:
    """The sibling of the parent."""
    return sibling(parent(i))


def children(i: int) -> tuple[int, int] | None:
    """(left, right) children of `i`, or None for a leaf."""
    if not i & 1:
        return None
    d = depth(i)
    o = offset(i, d) * 2
    return index(d - 1, o), index(d - 1, o + 1)


def left_child(i: int) -> int:
    if not i & 1:
        return -1
    d = depth(i)
    return index(d - 1, offset(i, d) * 2)


def right_child(i: int) -> int:
    if not i & 1:
        return -1
    d = depth(i)
    return index(d - 1, offset(i, d) * 2 + 1)


def left_span(i: int) -> int:
    """Index of the leftmost leaf under `i`."""
    if not i & 1:
        return i
    d = depth(i)
    return offset(i, d) * (2 << d)


def right_span(i: int) -> int:
    """Index of the rightmost leaf under `i`."""
    if not i & 1:
        return i
    d = depth(i)
    return (offset(i, d) + 1) * (2 << d) - 2


def spans(i: int) -> tuple[int, int]:
    return left_span(i), right_span(i)


def count(i: int) -> int:
    """Nodes under and including `i`."""
    return (2 << depth(i)) - 1


def count_leaves(i: int) -> int:
    return (count(i) + 1) >> 1


def full_roots(i: int) -> list[int]:
    """Roots of the tree whose leaves end before leaf-space index `i` (= 2 * length), left to right."""
    if i & 1:
        raise ValueError(f"full_roots needs an even index, got {i}")
    roots: list[int] = []
    leaves = i >> 1
    off = 0
    while leaves:
        f = 1 << (leaves.bit_length() - 1)
        roots.append(off + f - 1)
        off += 2 * f
        leaves -= f
    return roots
