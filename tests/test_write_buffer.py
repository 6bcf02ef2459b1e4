"""WriteBuffer against a real local file doing the same pwrite/ftruncate calls."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from hyperfs.fuse.write_buffer import WriteBuffer

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 300), st.binary(min_size=0, max_size=120)),
        st.tuples(st.just("truncate"), st.integers(0, 400)),
        st.tuples(st.just("read"), st.integers(0, 400), st.integers(0, 200)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, limit=st.sampled_from([0, 64, 256, 1 << 20]))
def test_same_bytes_as_a_local_file(tmp_path_factory, ops, limit):
    path = tmp_path_factory.mktemp("wb") / "model"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        with WriteBuffer(memory_limit=limit, spill_dir=str(path.parent)) as buf:
            for op in ops:
                if op[0] == "write":
                    _, offset, data = op
                    os.pwrite(fd, data, offset)
                    assert buf.write(offset, data) == len(data)
                elif op[0] == "truncate":
                    os.ftruncate(fd, op[1])
                    buf.truncate(op[1])
                else:
                    _, offset, size = op
                    assert buf.read(offset, size) == os.pread(fd, size, offset)
                assert buf.size == os.fstat(fd).st_size
            whole = os.pread(fd, buf.size + 1, 0)
            assert b"".join(buf.chunks(chunk_size=7)) == whole
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


def test_sparse_write_reads_zeros(tmp_path):
    with WriteBuffer(memory_limit=16, spill_dir=str(tmp_path)) as buf:
        buf.write(100, b"x")
        assert buf.size == 101
        assert buf.read(0, 101) == bytes(100) + b"x"
