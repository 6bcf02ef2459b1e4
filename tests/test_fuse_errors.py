"""The FUSE edge's handler wrapper: failures become the errno a local file system gives, and
the requests being answered are counted (a handler can tell it is the only one)."""

import errno

import pyfuse3
import pytest
import trio

from hyperfs.errors import FileNotFoundInDrive
from hyperfs.fuse.errors import fuse_errors
from tests.drive_store import trio_test


class Handlers:
    serving = 0

    def __init__(self) -> None:
        self.seen: list[int] = []

    @fuse_errors
    async def wait(self, event: trio.Event) -> None:
        self.seen.append(self.serving)
        await event.wait()

    @fuse_errors
    async def fail(self, err: Exception) -> None:
        self.seen.append(self.serving)
        raise err


@trio_test
async def test_requests_being_answered_are_counted_until_they_end_even_by_an_error():
    ops = Handlers()
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ops.wait, release)
        await trio.sleep(0.01)
        nursery.start_soon(ops.wait, release)
        await trio.sleep(0.01)
        assert ops.serving == 2
        release.set()
    assert ops.seen == [1, 2] and ops.serving == 0
    with pytest.raises(pyfuse3.FUSEError) as caught:
        await ops.fail(FileNotFoundInDrive("gone"))
    assert caught.value.errno == errno.ENOENT
    with pytest.raises(pyfuse3.FUSEError) as caught:
        await ops.fail(RuntimeError("a bug"))
    assert caught.value.errno == errno.EIO
    assert ops.seen[2:] == [1, 1] and ops.serving == 0
