"""The mount's inode table: numbers stay with their entries through renames and exchanges."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperfs.errors import FileNotFoundInDrive
from hyperfs.fuse.inodes import ROOT_INODE, InodeTable

NAMES = ["a", "b"]
PATHS = ["/" + "/".join(p) for depth in (1, 2, 3) for p in itertools.product(NAMES, repeat=depth)]


def _holds(top: str, path: str) -> bool:
    return path == top or path.startswith(top + "/")


class Model:
    """What the table must do, the plain way: every rename looks at every numbered path."""

    def __init__(self) -> None:
        self.ino: dict[str, int] = {"/": ROOT_INODE}
        self.path: dict[int, str | None] = {ROOT_INODE: "/"}
        self.next = ROOT_INODE + 1

    def number(self, path: str) -> None:
        if path not in self.ino:
            self.ino[path] = self.next
            self.path[self.next] = path
            self.next += 1

    def detach(self, path: str) -> None:
        ino = self.ino.pop(path, None)
        if ino is not None:
            self.path[ino] = None

    def take(self, top: str) -> list[tuple[str, int]]:
        return [(p[len(top) :], self.ino.pop(p)) for p in [p for p in self.ino if _holds(top, p)]]

    def place(self, top: str, taken: list[tuple[str, int]]) -> None:
        for rest, ino in taken:
            self.ino[top + rest] = ino
            self.path[ino] = top + rest

    def rename(self, old: str, new: str) -> None:
        self.detach(new)
        self.place(new, self.take(old))

    def exchange(self, a: str, b: str) -> None:
        under_a, under_b = self.take(a), self.take(b)
        self.place(b, under_a)
        self.place(a, under_b)


step = st.tuples(st.sampled_from(["ino", "detach", "rename", "exchange", "forget"]), st.sampled_from(PATHS), st.sampled_from(PATHS))


@settings(max_examples=500, deadline=None)
@given(st.lists(step, max_size=60))
def test_numbers_follow_their_entries_as_a_plain_scan_of_every_path_would(steps: list[tuple[str, str, str]]) -> None:
    table, model = InodeTable(), Model()
    for op, a, b in steps:
        if op == "ino":
            table.ino(a)
            model.number(a)
        elif op == "detach":
            table.detach(a)
            model.detach(a)
        elif op in ("rename", "exchange"):
            if _holds(a, b) or _holds(b, a):
                continue  # the kernel never asks for these (EINVAL)
            getattr(table, op)(a, b)
            getattr(model, op)(a, b)
        else:
            ino = model.ino.get(a, model.next - 1)
            table.forget(ino)
            if model.path.get(ino, "") is None:
                del model.path[ino]
        for path in PATHS:
            assert table.known(path) == model.ino.get(path), (op, a, b, path)
        for ino, path in model.path.items():
            if path is None:
                with pytest.raises(FileNotFoundInDrive):
                    table.path(ino)
            else:
                assert table.path(ino) == path


def test_a_folder_renamed_takes_the_numbers_under_it_even_below_unnumbered_folders() -> None:
    table = InodeTable()
    deep = table.ino("/x/y/z")  # its folders never numbered (the kernel looked it up from elsewhere)
    other = table.ino("/xy")  # a sibling whose name starts the same: not under /x
    table.rename("/x", "/w")
    assert table.known("/w/y/z") == deep and table.path(deep) == "/w/y/z"
    assert table.known("/x/y/z") is None
    assert table.path(other) == "/xy"
    table.rename("/w/y", "/v")
    assert table.path(deep) == "/v/z"


def test_a_folder_keeps_its_numbered_entries_when_one_deeper_down_goes() -> None:
    table = InodeTable()
    folder, inner = table.ino("/a/b"), table.ino("/a/b/c")
    table.ino("/a")
    table.detach("/a/b/c")  # /a/b is left with nothing numbered under it, but is numbered itself
    table.rename("/a", "/x")
    assert table.path(folder) == "/x/b"
    with pytest.raises(FileNotFoundInDrive):
        table.path(inner)
