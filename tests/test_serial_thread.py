"""SerialThread: jobs run off the event loop, one at a time, in the order given; the thread goes
on to a job given while the last one ran without coming back to the loop; errors reach the
caller whose job raised."""

import functools
import threading

import pytest
import trio

from hyperfs.core.serial_thread import SerialThread
from tests.drive_store import trio_test


@trio_test
async def test_jobs_run_in_order_on_one_thread_that_goes_straight_on():
    serial = SerialThread()
    gate = threading.Event()
    ran: list[tuple[int, int]] = []

    def job(n: int) -> int:
        if n == 0:
            gate.wait(10)  # the others are given while this one runs
        ran.append((n, threading.get_ident()))
        return n * n

    results: dict[int, int] = {}

    async def give(n: int) -> None:
        results[n] = await serial.run(job, n)

    async with trio.open_nursery() as nursery:
        for n in range(6):
            nursery.start_soon(give, n)
            await trio.sleep(0.01)  # given in this order
        gate.set()
    assert [n for n, _ in ran] == list(range(6))
    assert len({ident for _, ident in ran}) == 1 and ran[0][1] != threading.get_ident()
    assert results == {n: n * n for n in range(6)}


@trio_test
async def test_an_error_reaches_its_caller_and_later_jobs_still_run():
    serial = SerialThread()

    def fail() -> None:
        raise ValueError("bad job")

    with pytest.raises(ValueError, match="bad job"):
        await serial.run(fail)
    assert await serial.run(sum, [1, 2, 3]) == 6


@trio_test
async def test_a_cancelled_caller_stops_waiting_and_its_job_still_runs():
    serial = SerialThread()
    gate, done = threading.Event(), threading.Event()
    with trio.move_on_after(0.05) as scope:
        await serial.run(lambda: (gate.wait(10), done.set()))
    assert scope.cancelled_caught and not done.is_set()
    gate.set()
    assert await serial.run(done.is_set)  # it ran before this one


@trio_test
async def test_an_inline_job_runs_on_the_loop_when_the_thread_is_idle_and_after_the_queue_otherwise():
    serial = SerialThread()
    assert await serial.run(threading.get_ident, inline=True) == threading.get_ident()
    gate = threading.Event()
    ran: list[tuple[str, int]] = []

    def job(name: str) -> None:
        if name == "first":
            gate.wait(10)
        ran.append((name, threading.get_ident()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serial.run, job, "first")
        await trio.sleep(0.01)  # "first" holds the worker
        nursery.start_soon(functools.partial(serial.run, job, "inline", inline=True))
        await trio.sleep(0.01)
        assert ran == []  # waits its turn, not run on the loop ahead of "first"
        gate.set()
    assert [name for name, _ in ran] == ["first", "inline"]
    assert ran[0][1] == ran[1][1] != threading.get_ident()
