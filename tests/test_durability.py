"""A writer SIGKILLed in the middle of appending loses no returned append and leaves a clean core."""

import inspect
import os
import signal
import subprocess
import sys
import textwrap

from hyperfs.core import Corestore
from tests.drive_store import trio_test

BATCH = 4


def batch(k):
    return [bytes([k % 251, j]) * (1000 + 997 * j) for j in range(BATCH)]


# The writer process builds the very same batches.
WRITER = f"BATCH = {BATCH}\n" + inspect.getsource(batch) + textwrap.dedent(
    """
    import sys, trio
    from hyperfs.core import Corestore

    async def main(path):
        async with Corestore(path, primary_key=bytes(32)) as store:
            core = await store.get("log")
            k = 0
            while True:
                length, _ = await core.append(batch(k))
                print(length, flush=True)  # returned: must survive the kill
                k += 1

    trio.run(main, sys.argv[1])
    """
)


@trio_test
async def test_sigkill_mid_append_keeps_a_verified_prefix(tmp_path):
    path = str(tmp_path / "store")
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(__file__))
    )
    returned = 0
    assert child.stdout is not None
    for line in child.stdout:
        returned = int(line)
        if returned >= 200 * BATCH:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    async with Corestore(path, primary_key=bytes(32)) as store:
        core = await store.get("log")
        assert core.length >= returned and core.length % BATCH == 0
        for k in range(core.length // BATCH):
            for j, expected in enumerate(batch(k)):
                assert await core.get(k * BATCH + j, wait=False) == expected
        results = await store.audit()
        assert [r.errors for r in results] == [[]]
        assert results[0].blocks == core.length
        await core.append(b"after the crash")
        assert core.length % BATCH == 1
