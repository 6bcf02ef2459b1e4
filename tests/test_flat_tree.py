import pytest

from hyperfs.core import flat_tree as ft
from tests.vectors import load

V = load("flattree")


@pytest.mark.parametrize("n", V["nodes"], ids=lambda n: str(n["index"]))
def test_node_functions(n):
    i = n["index"]
    assert ft.depth(i) == n["depth"]
    assert ft.offset(i) == n["offset"]
    assert ft.parent(i) == n["parent"]
    assert ft.sibling(i) == n["sibling"]
    assert ft.left_child(i) == n["leftChild"]
    assert ft.right_child(i) == n["rightChild"]
    assert ft.left_span(i) == n["leftSpan"]
    assert ft.right_span(i) == n["rightSpan"]
    assert ft.count(i) == n["count"]
    assert ft.count_leaves(i) == n["countLeaves"]
    kids = ft.children(i)
    assert kids == (None if n["leftChild"] == -1 else (n["leftChild"], n["rightChild"]))


@pytest.mark.parametrize("r", V["fullRoots"], ids=lambda r: str(r["length"]))
def test_full_roots(r):
    assert ft.full_roots(r["index"]) == r["fullRoots"]


def test_index_and_large():
    for c in V["index"]:
        assert ft.index(c["depth"], c["offset"]) == c["index"]
    for n in V["large"]:
        i = n["index"]
        assert (ft.depth(i), ft.offset(i), ft.parent(i), ft.sibling(i)) == (
            n["depth"], n["offset"], n["parent"], n["sibling"])
        assert (ft.left_span(i), ft.right_span(i)) == (n["leftSpan"], n["rightSpan"])


def test_full_roots_rejects_odd():
    with pytest.raises(ValueError):
        ft.full_roots(3)
