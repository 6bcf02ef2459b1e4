"""`held(lock)`: a free lock is taken with no pause, a taken one is waited for in turn."""

import trio
import trio.testing

from hyperfs.core.locking import held
from tests.drive_store import trio_test


class Steps(trio.abc.Instrument):
    """Counts the scheduler's task steps: a task that yields is stepped again after."""

    def __init__(self):
        self.count = 0

    def before_task_step(self, task):
        self.count += 1


@trio_test
async def test_a_free_lock_is_taken_without_a_pause():
    lock = trio.Lock()
    steps = Steps()
    trio.lowlevel.add_instrument(steps)
    async with held(lock):
        assert lock.locked()
    assert steps.count == 0 and not lock.locked()
    async with lock:  # trio's own acquire pauses, even for a free lock
        pass
    assert steps.count > 0


@trio_test
async def test_a_taken_lock_is_waited_for_in_order():
    lock = trio.Lock()
    order = []

    async def take(name):
        async with held(lock):
            order.append(name)
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        async with held(lock):
            for name in "abc":
                nursery.start_soon(take, name)
                await trio.testing.wait_all_tasks_blocked()
            order.append("first")
    assert order == ["first", "a", "b", "c"]
