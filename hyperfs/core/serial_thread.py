"""`SerialThread`: blocking jobs run one after another in a worker thread, in the order given.

`trio.to_thread.run_sync` hands each job to a thread and the result back to the event loop;
a job given while another runs starts once the loop has taken that one's result and woken the
task that gives the next. A reader that asks for the next piece of a file while the last one is
being fetched wants it fetched right after, while the loop is busy handing out the last one:
here the thread goes on to the next job by itself, and the loop only collects results.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class SerialThread:
    """Runs the jobs given to `run` in order, one at a time, off the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: deque[Callable[[], None]] = deque()
        self._running = False  # a thread is working through `_jobs`

    async def run(self, fn: Callable[..., T], *args: Any, inline: bool = False) -> T:
        """`fn(*args)` in the worker thread, after every job given before it. A cancelled
        caller stops waiting; its job still runs (the ones after it may rely on it).

        `inline`: the caller knows the job is short and that nothing else needs the event loop
        meanwhile; with no job queued or running, it runs right here, sparing the two thread
        wake-ups a hand-off costs (more than a short job itself on a small VM). That path checks
        for cancellation but does not yield: the caller goes back to the loop right after."""
        if inline and not self._running:
            await trio.lowlevel.checkpoint_if_cancelled()
            return fn(*args)
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        result: list[Any] = []

        def job() -> None:
            try:
                result.append((fn(*args), None))
            except BaseException as err:  # noqa: BLE001 - raised again in the caller's task
                result.append((None, err))
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass  # the loop is gone: nobody waits

        with self._lock:
            self._jobs.append(job)
            start, self._running = not self._running, True
        if start:
            trio.lowlevel.start_thread_soon(self._work, lambda _: None, name="hyperfs-serial")
        await done.wait()
        value, error = result[0]
        if error is not None:
            raise error
        return value

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._running = False
                    return
                job = self._jobs.popleft()
            job()
