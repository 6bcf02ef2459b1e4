"""Merkle proofs: build the `data` answer to a `request`, and verify a received one.

A port of hypercore 11 `lib/merkle-tree.js` (`generateProof`, `blockAndSeekProof`, `upgradeProof`,
`additionalUpgradeProof`, `verifyTree`, `verifyUpgrade`), see `shared/spec/wire.md` §4.5.
Generation first plans which tree nodes a proof needs (pure index math), then reads them in one
call through a sync reader (`read_nodes_sync`, `read_block_sync`: the replicator runs it in a
worker thread). Verification is pure given the local roots, a sync node lookup and a signature
check; it returns a `VerifiedProof` that `Hypercore.apply_proof` stores. Seek proofs are not
implemented (we never ask for them and answer seek requests with noData).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hyperfs.core import flat_tree as ft
from hyperfs.core.crypto import leaf_hash, parent_node, tree_hash
from hyperfs.core.encoding import TreeNode
from hyperfs.core.manifest import Manifest
from hyperfs.core.protocol.messages import Data, DataBlock, DataHash, DataUpgrade, Request
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

    @property
    def byte_length(self) -> int:
        return sum(root.size for root in self.roots)


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
    """Node indexes of a proof, in wire order, before any storage read."""

    __slots__ = ("node", "upgrade", "additional")

    def __init__(self) -> None:
        self.node: list[int] | None = None
        self.upgrade: list[int] | None = None
        self.additional: list[int] | None = None


def _block_path(index: int, root: int, with_value: bool) -> list[int]:
    # Bottom-up siblings from `index` to `root`; a hash proof starts with the node itself.
    out = [] if with_value else [index]
    for _ in range(_MAX_DEPTH):
        if index == root:
            return out
        out.append(ft.sibling(index))
        index = ft.parent(index)
    raise ProofRequestError(f"node {index} is not under {root}")


def _upgrade_nodes(plan: _Plan, node: tuple[int, bool] | None, sub_tree: int, start: int, end: int) -> list[int]:
    """Nodes proving the roots of `end` to a peer holding the tree `start` (leaf-space indexes).

    With `node` = (index, has_value), the first node that would contain `sub_tree` is replaced by
    the block's path (put in `plan.node`), as merkle-tree.js does to avoid sending it twice.
    """
    out: list[int] | None = [] if start == 0 else None
    for root in ft.full_roots(end):
        if ft.right_span(root) + 1 < start:  # the peer already has it
            continue
        if out is None and _contains(root, start - 2):
            # The peer's trailing roots merge into `root`: send the right siblings on the way up.
            out = []
            target = i = start - 2
            while i != root:
                s = ft.sibling(i)
                if s > target:
                    if node is not None and plan.node is None and _contains(s, sub_tree):
                        plan.node = _block_path(node[0], s, node[1])
                    else:
                        out.append(s)
                i = ft.parent(i)
            continue
        if out is None:
            out = []
        if node is not None and plan.node is None and _contains(root, sub_tree):
            plan.node = _block_path(node[0], root, node[1])
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


def plan_proof(request: Request, length: int) -> _Plan:
    """The node indexes answering `request` from a tree of `length` blocks (ProofRequestError if none can)."""
    head = 2 * length
    up = request.upgrade
    start = 2 * up.start if up else 0
    end = start + 2 * up.length if up else head
    if request.seek is not None:
        raise ProofRequestError("seek proofs are not supported")
    if request.block is not None:
        node: tuple[int, bool] | None = (2 * request.block.index, True)
        nodes, last_index = request.block.nodes, request.block.index
    elif request.hash is not None:
        node = (request.hash.index, False)
        nodes, last_index = request.hash.nodes, ft.right_span(request.hash.index) // 2
    else:
        node, nodes, last_index = None, 0, 0
    if head == 0 or (up and not start < end <= head):
        raise ProofRequestError("invalid upgrade")
    plan = _Plan()
    sub_tree = head
    if node is not None and (up is None or last_index < up.start):
        sub_tree = _nodes_to_root(node[0], nodes, end)
        plan.node = _block_path(node[0], sub_tree, node[1])
    elif node is not None:
        sub_tree = node[0]
    if up is not None:
        plan.upgrade = _upgrade_nodes(plan, node, sub_tree, start, end)
        if head > end:
            plan.additional = _upgrade_nodes(plan, None, head, end, head)
    if node is not None and plan.node is None:
        raise ProofRequestError("invalid block request")
    return plan


def generate_proof(
    source: ProofSource, request: Request, length: int, fork: int, signature: bytes | None
) -> Data:
    """The `data` message answering `request` from a core of `length` blocks (blocking reads).

    Raises ProofRequestError when the request cannot be answered (the peer gets noData).
    """
    plan = plan_proof(request, length)
    wanted = [*(plan.node or ()), *(plan.upgrade or ()), *(plan.additional or ())]
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


def _verify_tree(data: Data, proven: dict[int, TreeNode]) -> TreeNode | None:
    """Hash a block/hash proof up to its (untrusted) sub-root."""
    if data.block is not None:
        value = data.block.value
        cur = TreeNode(2 * data.block.index, len(value), leaf_hash(value))
        queue = _Queue(data.block.nodes)
    elif data.hash is not None:
        queue = _Queue(data.hash.nodes)
        cur = queue.take(data.hash.index)
    else:
        return None
    if len(queue) > _MAX_DEPTH:
        raise VerificationError("proof climbs more levels than a tree has")
    proven[cur.index] = cur
    while len(queue):
        sib = queue.take(ft.sibling(cur.index))
        cur = parent_node(cur, sib)
        proven[sib.index] = sib
        proven[cur.index] = cur
    return cur


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
) -> tuple[list[TreeNode], bool]:
    """The roots after the upgrade (with additional nodes), and whether `sub` was used by it."""
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
    return batch.roots, queue.extra is None


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
    if data.seek is not None:
        raise VerificationError("unexpected seek proof")
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
        new_roots, trusted = _verify_upgrade(up, sub, base_roots, proven)
        new_length = ft.right_span(new_roots[-1].index) // 2 + 1
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
