"""Merkle proofs: build the `data` answer to a `request`, and verify a received one.

A port of hypercore 11 `lib/merkle-tree.js` (`generateProof`, `blockAndSeekProof`, `upgradeProof`,
`additionalUpgradeProof`, `verifyTree`, `verifyUpgrade`), see `shared/spec/wire.md` §4.5.
Generation first plans which tree nodes a proof needs (pure index math), then reads them in one
call through a sync reader (`read_nodes_sync`, `read_block_sync`: the replicator runs it in a
worker thread). Verification is pure given the local roots, a sync node lookup and a signature
check; it returns a `VerifiedProof` that `Hypercore.apply_proof` stores. A seek needs node
sizes to find its sub-tree, so planning reads those few nodes through the same reader.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hyperfs.core import flat_tree as ft
from hyperfs.core.crypto import leaf_hash, parent_node, tree_hash
from hyperfs.core.encoding import TreeNode
from hyperfs.core.manifest import Manifest
from hyperfs.core.protocol.messages import Data, DataBlock, DataHash, DataSeek, DataUpgrade, Request
from hyperfs.errors import ProofRequestError, VerificationError

# A proof climbs at most one level per bit of a 64-bit index; more means hostile input.
_MAX_DEPTH = 64


class ProofSource(Protocol):
    """What proof generation reads: stored tree nodes and blocks (blocking calls)."""

    def read_nodes_sync(self, indexes: Sequence[int]) -> dict[int, TreeNode]: ...

    def read_block_sync(self, index: int) -> bytes | None: ...


SignatureCheck = Callable[[bytes, int, int, bytes], bool]
"""`check(tree_hash, length, fork, signature) -> bool`: the core's manifest verifies a head."""


@dataclass(frozen=True, slots=True)
class VerifiedUpgrade:
    """A new signed head proven by an upgrade: roots at `length`, replacing the head at `start`."""

    start: int
    length: int
    fork: int
    roots: tuple[TreeNode, ...]
    tree_hash: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    """What a verified `data` message lets us store.

    `nodes`: every tree node it proved (leaf, siblings, parents, new roots), by index order of
    discovery; `block_index`/`value`: the block, if any; `upgrade`: the new head, if any;
    `manifest`: the core's manifest when this proof taught it (its hash equals the core key).
    """

    fork: int
    nodes: tuple[TreeNode, ...]
    block_index: int | None = None
    value: bytes | None = None
    upgrade: VerifiedUpgrade | None = None
    manifest: Manifest | None = None


# --- generation ---------------------------------------------------------------------------------


def _contains(i: int, x: int) -> bool:
    return ft.left_span(i) <= x <= ft.right_span(i)


class _Plan:
    """Node indexes of a proof, in wire order, before the nodes themselves are read."""

    __slots__ = ("node", "seek", "upgrade", "additional")

    def __init__(self) -> None:
        self.node: list[int] | None = None
        self.seek: list[int] | None = None
        self.upgrade: list[int] | None = None
        self.additional: list[int] | None = None


class _Target:
    """What a request proves below its sub-tree: a block or hash node, and/or a seek root."""

    __slots__ = ("index", "has_value", "seek_root")

    def __init__(self, index: int | None, has_value: bool, seek_root: int | None) -> None:
        self.index = index
        self.has_value = has_value
        self.seek_root = seek_root


def _climb(start: int, root: int) -> list[int]:
    """Bottom-up siblings from `start` up to `root`."""
    out = []
    for _ in range(_MAX_DEPTH):
        if start == root:
            return out
        out.append(ft.sibling(start))
        start = ft.parent(start)
    raise ProofRequestError(f"node {start} is not under {root}")


def _prove_target(plan: _Plan, target: _Target, root: int) -> None:
    """`blockAndSeekProof`: the block/hash path up to `root`, with the seek path spliced in where
    the seek root hangs off it (or only the seek path when there is no block/hash)."""
    seek_root = target.seek_root
    if target.index is None:
        assert seek_root is not None
        plan.seek = [seek_root, *_climb(seek_root, root)]
        return
    out = [] if target.has_value else [target.index]
    for s in _climb(target.index, root):
        if seek_root is not None and s != seek_root and _contains(s, seek_root):
            plan.seek = [seek_root, *_climb(seek_root, s)]
        else:
            out.append(s)
    plan.node = out


def _upgrade_nodes(plan: _Plan, target: _Target | None, sub_tree: int, start: int, end: int) -> list[int]:
    """Nodes proving the roots of `end` to a peer holding the tree `start` (leaf-space indexes).

    The first node that would contain `sub_tree` is replaced by the target's proof (into
    `plan.node`/`plan.seek`), as merkle-tree.js does to avoid sending it twice.
    """

    def substitutes(index: int) -> bool:
        return plan.node is None and plan.seek is None and _contains(index, sub_tree)

    out: list[int] | None = [] if start == 0 else None
    for root in ft.full_roots(end):
        if ft.right_span(root) + 1 < start:  # the peer already has it
            continue
        if out is None and _contains(root, start - 2):
            # The peer's trailing roots merge into `root`: send the right siblings on the way up.
            out = []
            target_leaf = start - 2
            for s in _climb(target_leaf, root):
                if s > target_leaf:
                    if target is not None and substitutes(s):
                        _prove_target(plan, target, s)
                    else:
                        out.append(s)
            continue
        if out is None:
            out = []
        if target is not None and substitutes(root):
            _prove_target(plan, target, root)
            continue
        out.append(root)
    return out or []


def _nodes_to_root(index: int, nodes: int, head: int) -> int:
    if nodes > _MAX_DEPTH:
        raise ProofRequestError("nodes is out of bounds")
    for _ in range(nodes):
        index = ft.parent(index)
        if _contains(index, head):
            raise ProofRequestError("nodes is out of bounds")
    return index


class _Seeker:
    """Finds the tree node a byte offset falls in (`seekFromHead`, `seekUntrustedTree`)."""

    def __init__(self, source: ProofSource, length: int, padding: int) -> None:
        self.source = source
        self.length = length
        self.padding = padding

    def node(self, index: int) -> TreeNode | None:
        return self.source.read_nodes_sync([index]).get(index)

    def size(self, node: TreeNode) -> int:
        return node.size - self.padding * ft.count_leaves(node.index)

    def required(self, index: int) -> TreeNode:
        node = self.node(index)
        if node is None:
            raise ProofRequestError(f"tree node {index} is not stored")
        return node

    def from_head(self, head: int, offset: int) -> int:
        for root in ft.full_roots(head):
            size = self.size(self.required(root))
            if offset == size:
                return root
            if offset > size:
                offset -= size
                continue
            return self.trusted(root, offset)
        return head

    def trusted(self, root: int, offset: int) -> int:
        """The node at `offset` inside `root`, trusting that it is in there."""
        if not offset:
            return root
        i = root
        for _ in range(_MAX_DEPTH):
            if not i & 1:
                return i
            i = ft.left_child(i)
            left = self.node(i)
            if left is None:
                return ft.parent(i)
            size = self.size(left)
            if size == offset:
                return i
            if size < offset:
                offset -= size
                i = ft.sibling(i)
        raise ProofRequestError("seek does not end")

    def untrusted(self, root: int, offset: int) -> int:
        start = self.byte_offset(root) - (self.padding * ft.left_span(root) // 2 if self.padding else 0)
        if start > offset:
            raise ProofRequestError("invalid seek")
        if start == offset:
            return root
        offset -= start
        if self.size(self.required(root)) <= offset:
            raise ProofRequestError("invalid seek")
        return self.trusted(root, offset)

    def byte_offset(self, index: int) -> int:
        """Bytes before node `index` (its leftmost leaf) in the tree of `length` blocks."""
        if index == 2 * self.length:
            return sum(self.required(r).size for r in ft.full_roots(index))
        if index & 1:
            index = ft.left_span(index)
        head = offset = 0
        for root in ft.full_roots(2 * self.length):
            head += 2 * (root - head + 1)
            if index >= head:
                offset += self.required(root).size
                continue
            i = root
            for _ in range(_MAX_DEPTH):
                if i == index:
                    return offset
                if index < i:
                    i = ft.left_child(i)
                else:
                    i = ft.left_child(i)
                    offset += self.required(i).size
                    i = ft.sibling(i)
            break
        raise ProofRequestError(f"no byte offset for node {index}")


def plan_proof(request: Request, length: int, source: ProofSource) -> _Plan:
    """The node indexes answering `request` from a tree of `length` blocks (ProofRequestError if
    none can). Reads tree nodes only to resolve a seek."""
    head = 2 * length
    up = request.upgrade
    start = 2 * up.start if up else 0
    end = start + 2 * up.length if up else head
    seek = request.seek
    if request.block is not None:
        index: int | None = 2 * request.block.index
        has_value, nodes, last_index = True, request.block.nodes, request.block.index
    elif request.hash is not None:
        index = request.hash.index
        has_value, nodes, last_index = False, request.hash.nodes, ft.right_span(request.hash.index) // 2
    else:
        index, has_value, nodes, last_index = None, False, 0, 0
    if head == 0 or (up and not start < end <= head):
        raise ProofRequestError("invalid upgrade")
    if seek is not None and up is not None and index is not None and index >= start:
        raise ProofRequestError("cannot both do a seek and block/hash request when upgrading")
    plan = _Plan()
    sub_tree = head
    target = None  # what the upgrade walk proves in place of the node containing it
    seeker = _Seeker(source, length, seek.padding) if seek is not None else None
    if index is not None and (up is None or last_index < up.start):
        sub_tree = _nodes_to_root(index, nodes, end)
        seek_root = seeker.untrusted(sub_tree, seek.bytes) if seeker and seek else None
        _prove_target(plan, _Target(index, has_value, seek_root), sub_tree)
    elif up is not None and seeker is not None and seek is not None:
        sub_tree = seeker.from_head(end, seek.bytes)
        target = _Target(index, has_value, sub_tree)
    elif up is not None and index is not None:
        sub_tree = index
        target = _Target(index, has_value, None)
    if up is not None:
        plan.upgrade = _upgrade_nodes(plan, target, sub_tree, start, end)
        if head > end:
            plan.additional = _upgrade_nodes(plan, None, head, end, head)
    if index is not None and plan.node is None:
        raise ProofRequestError("invalid block request")
    return plan


def generate_proof(
    source: ProofSource, request: Request, length: int, fork: int, signature: bytes | None
) -> Data:
    """The `data` message answering `request` from a core of `length` blocks (blocking reads).

    Raises ProofRequestError when the request cannot be answered (the peer gets noData).
    """
    plan = plan_proof(request, length, source)
    wanted = [*(plan.node or ()), *(plan.seek or ()), *(plan.upgrade or ()), *(plan.additional or ())]
    stored = source.read_nodes_sync(wanted) if wanted else {}
    missing = [i for i in wanted if i not in stored]
    if missing:
        raise ProofRequestError(f"tree nodes {missing[:4]} are not stored")

    def nodes(indexes: list[int] | None) -> list[TreeNode]:
        return [stored[i] for i in indexes or ()]

    data = Data(request=request.id, fork=fork)
    if request.block is not None:
        value = source.read_block_sync(request.block.index)
        if value is None:
            raise ProofRequestError(f"block {request.block.index} is not stored")
        data.block = DataBlock(request.block.index, value, nodes(plan.node))
    elif request.hash is not None:
        data.hash = DataHash(request.hash.index, nodes(plan.node))
    if request.seek is not None and plan.seek is not None:
        data.seek = DataSeek(request.seek.bytes, nodes(plan.seek))
    if request.upgrade is not None:
        data.upgrade = DataUpgrade(
            request.upgrade.start, request.upgrade.length, nodes(plan.upgrade), nodes(plan.additional), signature
        )
    return data


# --- verification -------------------------------------------------------------------------------


class _Queue:
    """The proof's nodes, taken strictly in order, plus one `extra` node that may be taken anywhere."""

    __slots__ = ("nodes", "pos", "extra")

    def __init__(self, nodes: list[TreeNode], extra: TreeNode | None = None) -> None:
        self.nodes = nodes
        self.pos = 0
        self.extra = extra

    def __len__(self) -> int:
        return len(self.nodes) - self.pos + (self.extra is not None)

    def take(self, index: int) -> TreeNode:
        if self.extra is not None and self.extra.index == index:
            node, self.extra = self.extra, None
            return node
        if self.pos >= len(self.nodes):
            raise VerificationError(f"proof is missing node {index}")
        node = self.nodes[self.pos]
        if node.index != index:
            raise VerificationError(f"proof has node {node.index} where node {index} belongs")
        self.pos += 1
        return node


def _hash_up(cur: TreeNode, queue: _Queue, proven: dict[int, TreeNode]) -> TreeNode:
    """Combine `cur` with the queued siblings up to the (untrusted) sub-root."""
    if len(queue) > _MAX_DEPTH:
        raise VerificationError("proof climbs more levels than a tree has")
    proven[cur.index] = cur
    while len(queue):
        sib = queue.take(ft.sibling(cur.index))
        cur = parent_node(cur, sib)
        proven[sib.index] = sib
        proven[cur.index] = cur
    return cur


def _verify_tree(data: Data, proven: dict[int, TreeNode]) -> TreeNode | None:
    """Hash a seek and a block/hash proof up to their (untrusted) sub-root (`verifyTree`)."""
    seek_root = None
    if data.seek is not None and data.seek.nodes:
        queue = _Queue(data.seek.nodes)
        seek_root = _hash_up(queue.take(data.seek.nodes[0].index), queue, proven)
    if data.block is not None:
        value = data.block.value
        # The seek's sub-root hangs off the block's path: it may be taken anywhere on the way.
        return _hash_up(TreeNode(2 * data.block.index, len(value), leaf_hash(value)),
                        _Queue(data.block.nodes, seek_root), proven)
    if data.hash is not None:
        queue = _Queue(data.hash.nodes, seek_root)
        return _hash_up(queue.take(data.hash.index), queue, proven)
    return seek_root


class _Roots:
    """A growing list of roots that merges siblings as they are appended (MerkleTreeBatch.appendRoot)."""

    __slots__ = ("roots", "proven")

    def __init__(self, roots: Sequence[TreeNode], proven: dict[int, TreeNode]) -> None:
        self.roots = list(roots)
        self.proven = proven

    def append(self, node: TreeNode) -> int:
        """Append `node`, merge, and return the index of the last root."""
        self.roots.append(node)
        self.proven[node.index] = node
        while len(self.roots) > 1 and ft.sibling(self.roots[-1].index) == self.roots[-2].index:
            right = self.roots.pop()
            merged = parent_node(self.roots.pop(), right)
            self.roots.append(merged)
            self.proven[merged.index] = merged
        return self.roots[-1].index


def _verify_upgrade(
    up: DataUpgrade, sub: TreeNode | None, roots: Sequence[TreeNode], proven: dict[int, TreeNode]
) -> tuple[list[TreeNode], int, bool]:
    """The roots and length after the upgrade (with additional nodes), and whether `sub` was used by it."""
    queue = _Queue(up.nodes, sub)
    batch = _Roots(roots, proven)
    kept = 0
    grow = len(roots) > 0
    for root in ft.full_roots(2 * (up.start + up.length)):
        if kept < len(roots) and roots[kept].index == root:
            kept += 1
            continue
        if grow:
            grow = False
            if kept < len(roots):
                # Our trailing roots merge into `root`: the proof carries their right siblings.
                last = batch.roots[-1].index
                for _ in range(_MAX_DEPTH):
                    if last == root:
                        break
                    last = batch.append(queue.take(ft.sibling(last)))
                else:
                    raise VerificationError(f"upgrade never reaches root {root}")
                continue
        batch.append(queue.take(root))

    extra = up.additional_nodes
    i = 0
    ite = batch.roots[-1].index
    while i < len(extra) and extra[i].index == ft.sibling(ite):
        ite = batch.append(extra[i])
        i += 1
    ite = ft.sibling(ite)
    while i < len(extra):
        node = extra[i]
        i += 1
        for _ in range(_MAX_DEPTH):
            if node.index == ite:
                break
            if not ite & 1:
                raise VerificationError(f"unexpected additional node {node.index}")
            ite = ft.left_child(ite)
        else:
            raise VerificationError(f"unexpected additional node {node.index}")
        ite = ft.sibling(batch.append(node))
    new_length = ft.right_span(batch.roots[-1].index) // 2 + 1
    if [r.index for r in batch.roots] != ft.full_roots(2 * new_length):
        raise VerificationError("upgrade roots do not form a tree")
    return batch.roots, new_length, queue.extra is None


def verify_proof(
    data: Data,
    *,
    length: int,
    fork: int,
    roots: Sequence[TreeNode],
    stored_node: Callable[[int], TreeNode | None],
    check_signature: SignatureCheck,
) -> VerifiedProof:
    """Verify `data` against our head (`length`, `fork`, `roots`); VerificationError if it does not.

    `stored_node(index)` looks up a node we already trust (sync); `check_signature` verifies the
    upgrade's signature container for the new head. Nothing is stored here.
    """
    proven: dict[int, TreeNode] = {}
    sub = _verify_tree(data, proven)
    upgrade = None
    trusted = False
    if data.upgrade is not None:
        up = data.upgrade
        # Same fork: the upgrade extends our tree. Another fork: it replaces it from scratch.
        base_length, base_roots = (length, roots) if data.fork == fork else (0, ())
        if up.start != base_length or up.length <= 0:
            raise VerificationError(f"upgrade from {up.start} does not start at our length {base_length}")
        if not up.signature:
            raise VerificationError("upgrade without a signature")
        new_roots, new_length, trusted = _verify_upgrade(up, sub, base_roots, proven)
        root_hash = tree_hash(new_roots)
        if not check_signature(root_hash, new_length, data.fork, up.signature):
            raise VerificationError(f"signature does not verify for length {new_length}")
        upgrade = VerifiedUpgrade(up.start, new_length, data.fork, tuple(new_roots), root_hash, up.signature)
    elif data.fork != fork:
        raise VerificationError(f"proof is for fork {data.fork}, ours is {fork}")
    if sub is not None and not trusted:
        if data.fork != fork:
            raise VerificationError("proof on another fork must hash into its upgrade")
        known = next((r for r in roots if r.index == sub.index), None) or stored_node(sub.index)
        if known is None or known.hash != sub.hash:
            raise VerificationError(f"proof does not hash to a trusted node ({sub.index})")
    block = data.block
    return VerifiedProof(
        fork=data.fork,
        nodes=tuple(proven.values()),
        block_index=block.index if block else None,
        value=block.value if block else None,
        upgrade=upgrade,
    )
