"""WriteBuffer against a real local file doing the same pwrite/ftruncate calls."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperfs.fuse.write_buffer import MemoryBudget, WriteBuffer

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 300), st.binary(min_size=0, max_size=120)),
        st.tuples(st.just("truncate"), st.integers(0, 400)),
        st.tuples(st.just("read"), st.integers(0, 400), st.integers(0, 200)),
        st.tuples(st.just("drop"), st.integers(0, 400)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, limit=st.sampled_from([0, 64, 256, 1 << 20]), merge_below=st.sampled_from([0, 16, 1 << 16]))
def test_same_bytes_as_a_local_file(tmp_path_factory, ops, limit, merge_below):
    """Every operation agrees with a local file; after `drop_before`, those at or past `base`
    still do and those below it are refused."""
    path = tmp_path_factory.mktemp("wb") / "model"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        budget = MemoryBudget(1 << 30)
        with WriteBuffer(memory_limit=limit, spill_dir=str(path.parent), merge_below=merge_below, budget=budget) as buf:
            for op in ops:
                if op[0] == "drop":
                    before, spilled = buf.base, buf.spilled
                    buf.drop_before(op[1])
                    assert before <= buf.base <= max(before, min(op[1], buf.size))
                    assert buf.base == before or not spilled  # a temporary file keeps it all
                elif op[0] == "read":
                    _, offset, size = op
                    if offset < buf.base and size and offset < buf.size:
                        with pytest.raises(ValueError):
                            buf.read(offset, size)
                    else:
                        expected = os.pread(fd, size, offset)
                        assert buf.read(offset, size) == expected
                        run = buf.read_run(offset, size)
                        assert expected.startswith(run) and bool(run) == bool(expected)
                elif op[1] < buf.base:  # a write or a cut below what was dropped
                    with pytest.raises(ValueError):
                        buf.write(*op[1:]) if op[0] == "write" else buf.truncate(op[1])
                elif op[0] == "write":
                    _, offset, data = op
                    os.pwrite(fd, data, offset)
                    assert buf.write(offset, data) == len(data)
                else:
                    os.ftruncate(fd, op[1])
                    buf.truncate(op[1])
                assert buf.size == os.fstat(fd).st_size
                _check_runs(buf)
                assert budget.held == (0 if buf.spilled else buf._held)
            whole = os.pread(fd, buf.size + 1, buf.base)
            assert b"".join(buf.chunks(chunk_size=7, start=buf.base)) == whole
        assert budget.held == 0  # closed
    finally:
        os.close(fd)


def test_spills_past_the_bound_and_leaves_no_file(tmp_path):
    with WriteBuffer(memory_limit=1000, spill_dir=str(tmp_path)) as buf:
        buf.write(0, b"a" * 999)
        assert not buf.spilled
        buf.write(999, b"bc")
        assert buf.spilled
        assert buf.read(997, 10) == b"aabc"
        assert list(tmp_path.iterdir()) == []  # the temp file is nameless


def test_buffers_sharing_a_budget_spill_once_they_hold_more_together(tmp_path):
    """Each buffer under its own limit, together past the shared one: the buffer whose write
    went past it spills, the others stay, and every change in what they hold is counted."""
    budget = MemoryBudget(1000)
    a = WriteBuffer(memory_limit=800, spill_dir=str(tmp_path), budget=budget)
    b = WriteBuffer(memory_limit=800, spill_dir=str(tmp_path), budget=budget)
    a.write(0, b"a" * 600)
    b.write(0, b"b" * 300)
    assert (budget.held, a.spilled, b.spilled) == (900, False, False)
    b.write(300, b"c" * 200)
    assert (budget.held, a.spilled, b.spilled) == (600, False, True)
    assert b.read(0, 1000) == b"b" * 300 + b"c" * 200
    a.truncate(100)
    assert budget.held == 100
    a.write(100, b"d" * 50)
    assert (budget.held, a.read(50, 100)) == (150, b"a" * 50 + b"d" * 50)
    a.drop_before(150)
    assert budget.held == 0
    a.close()
    b.close()
    assert budget.held == 0


def test_sparse_write_reads_zeros(tmp_path):
    with WriteBuffer(memory_limit=16, spill_dir=str(tmp_path)) as buf:
        buf.write(100, b"x")
        assert buf.size == 101
        assert buf.read(0, 101) == bytes(100) + b"x"


def _check_runs(buf: WriteBuffer) -> None:
    """The held runs are in order, apart, inside the file, and counted right (the spill bound)."""
    if buf.spilled:
        return
    ends = [start + len(buf._runs[start]) for start in buf._starts]
    assert sorted(buf._runs) == buf._starts
    assert all(end <= start for end, start in zip(ends, buf._starts[1:]))
    assert not ends or ends[-1] <= buf.size
    assert buf._held == sum(map(len, buf._runs.values()))


def test_a_sequential_writers_bytes_are_held_as_given_and_drop_frees_them(tmp_path):
    """A sequential writer's writes are held as given (no copy), also once one write came split
    and all that follow are off the 1 MiB grid, and dropping them frees the memory they held:
    a streamed file never reaches the spill bound."""
    sizes = [64, 30, 34] + [64] * 8
    chunks = [os.urandom(n) for n in sizes]
    with WriteBuffer(memory_limit=200, spill_dir=str(tmp_path), merge_below=16) as buf:
        offset = 0
        for chunk in chunks:
            buf.write(offset, chunk)
            assert buf.read(offset, len(chunk)) is chunk
            assert buf.read_run(offset, 1000) is chunk
            buf.drop_before(offset)
            offset += len(chunk)
        assert not buf.spilled and buf.base == offset - 64 and buf.size == offset
        assert buf.read(offset - 64, 100) == chunks[-1]
        with pytest.raises(ValueError):
            buf.read(0, 1)


def test_small_writes_in_a_row_are_one_run(tmp_path):
    with WriteBuffer(spill_dir=str(tmp_path), merge_below=16) as buf:
        for offset in range(0, 40, 4):
            buf.write(offset, b"abcd")
        assert buf._starts == [0, 16, 32]  # a run takes more while under 16 bytes
        assert buf.read(0, 100) == b"abcd" * 10
