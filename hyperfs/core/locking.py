"""`held(lock)`: hold a trio lock, taken without a pause when it is free.

`async with lock` always yields to the scheduler, even for a free lock: a full scheduler pass
(an epoll poll among them) each time. A mount takes several locks per request, so that was a
pass per lock for nearly every file `tar x` writes. A lock that is taken waits as usual, in
trio's fair order.
"""

from __future__ import annotations

import trio


class held:  # noqa: N801 - used like a function, as contextlib's `closing`
    """`async with held(lock):` holds `lock`; no yield when it is free."""

    __slots__ = ("_lock",)

    def __init__(self, lock: trio.Lock) -> None:
        self._lock = lock

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
