"""NodeCache: tree nodes kept once read, all dropped at a truncation, never one read before it;
and a core's seeks stay right across a truncation that replaces the nodes they walked."""

from hyperfs.core.encoding import TreeNode
from hyperfs.core.node_cache import NodeCache
from tests.drive_store import trio_test
from tests.test_hypercore import open_core


def node(index: int) -> TreeNode:
    return TreeNode(index, index + 1, bytes([index % 256]) * 32)


def test_a_node_is_read_once_then_served_from_memory():
    reads: list[int] = []

    def read(index: int) -> TreeNode | None:
        reads.append(index)
        return node(index) if index < 10 else None

    cache = NodeCache()
    assert cache.get(3, read) == node(3) and cache.get(3, read) == node(3)
    assert cache.get(12, read) is None and cache.get(12, read) is None  # absent ones are asked again
    assert reads == [3, 12, 12]
    cache.forget()
    assert cache.get(3, read) == node(3) and reads[-1] == 3


def test_a_node_read_across_a_truncation_is_not_kept():
    cache = NodeCache()

    def read_then_truncated(index: int) -> TreeNode:
        cache.forget()  # a truncation commits while this read runs
        return node(index)

    assert cache.get(5, read_then_truncated) == node(5)
    assert cache.get(5, lambda index: None) is None  # not kept: the read raced the truncation


def test_the_oldest_go_when_full():
    cache = NodeCache(limit=8)
    for index in range(20):
        cache.get(index, node)
    assert cache.get(19, lambda index: None) == node(19)
    assert cache.get(0, lambda index: None) is None


@trio_test
async def test_seeks_after_a_truncation_walk_the_new_tree(tmp_path):
    core = await open_core(tmp_path)
    await core.append([b"a" * 10] * 16)
    assert await core.seek(95) == (9, 5) and await core.seek(60) == (6, 0)
    await core.truncate(4)
    await core.append([b"b" * 3] * 12)  # the same indexes, other sizes
    assert await core.seek(60) == (4 + (60 - 40) // 3, (60 - 40) % 3)
    assert core.read_node_sync(8).size == 3
    await core.close()
