"""Durability: a committed write batch survives SIGKILL of the writer; read-only opens; flush(sync=True)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from hyperfs.core.storage import CorestoreStorage
from hyperfs.errors import NotWritableError
from tests.storage_helpers import ZERO32, read_blocks, write_blocks

WRITER = textwrap.dedent(
    """
    import sys
    from hyperfs.core.storage import CorestoreStorage, Head
    store = CorestoreStorage(sys.argv[1])
    core = store.create(key=bytes(32), discovery_key=bytes(32))
    length = 0
    while True:
        tx = core.write()
        for i in range(length, length + 16):
            tx.put_block(i, i.to_bytes(4, "little") * 16384)
        length += 16
        tx.set_head(Head(0, length, bytes(32), None))
        tx.flush()
        if length % 256 == 0:
            store.flush(sync=True)
        print(length, flush=True)
    """
)


def test_sigkill_loses_nothing_committed(tmp_path):
    folder = str(tmp_path / "store")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, folder], stdout=subprocess.PIPE, text=True)
    try:
        committed = 0
        while committed < 2000:
            line = proc.stdout.readline()
            assert line, "writer exited early"
            committed = int(line)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()

    store = CorestoreStorage(folder)
    core = store.resume(ZERO32)
    head = core.read().get_head()
    assert head.length >= committed  # every batch reported as committed is there
    blocks = core.read().get_blocks(list(range(head.length + 1)))
    assert blocks[-1] is None
    assert all(b == i.to_bytes(4, "little") * 16384 for i, b in enumerate(blocks[:-1]))
    assert [e.index for e in core.create_block_stream()] == list(range(head.length))
    store.close()


def test_read_only_open_reads_and_refuses_writes(tmp_path):
    store = CorestoreStorage(str(tmp_path))
    core = store.create(key=ZERO32, discovery_key=ZERO32)
    write_blocks(core, 3)
    store.flush(sync=True)
    store.close()
    ro = CorestoreStorage(str(tmp_path), read_only=True)
    core = ro.resume(ZERO32)
    assert read_blocks(core, 4) == [b"block0", b"block1", b"block2", None]
    with pytest.raises(NotWritableError):
        write_blocks(core, 1)
    with pytest.raises(NotWritableError):
        ro.set_seed(ZERO32)
    ro.close()

