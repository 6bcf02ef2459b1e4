"""Read-ahead for the readers of a peer's drive: which content blocks to ask for before a read.

A block not stored here costs a round trip to a peer. A reader going through a file front to
back (`cat`), or through a tree of files in the order they were written (`tar c`, `cp -r`:
the drive appends each file's blocks after the last file's), would pay one per kernel read or
per file. So the drive's readers share one run: a read that goes on from the last one in its
file, or lands in the blocks the run has asked for so far, asks peers for a window of blocks
past its own, which doubles with each such read up to READ_AHEAD (the kernel reads 1 MiB at a
time, two at once: counting the window from a read's end keeps the next read in the run). A
run stays in the file it started in until a read of another file lands in it. A read of a file
from its start that lands within NEAR windows before or past the run goes on in it too (files
read in another order than written: rsync's sorted names over a folder `cp -a` wrote in
readdir's order), and once one has landed before it, the run asks for a window behind its
reads as well. A read anywhere else ends the run. So a reader that jumps about, or reads one
file, fetches nothing past what it reads or that file. The window is topped up once the lead
is down to half of it, so peers are asked for half a window at a time.
"""

from __future__ import annotations

from typing import Any

READ_AHEAD_FIRST = 8  # blocks a run asks for ahead of its first read
READ_AHEAD = 128  # and at most (8 MiB of 64 KiB blocks: 400 MB/s over a 20 ms round trip)
NEAR = 4  # windows before or past a run within which a read that goes on in its file (as one
# from the file's start does) still goes on in the run


class ReadAhead:
    """The read-ahead run of one drive's content core (a `Hypercore`)."""

    def __init__(self, content: Any) -> None:
        self._content = content
        self._window = 0  # 0: no run
        self._from = self._asked = 0  # the blocks [from, asked) have been asked for
        self._file: tuple[int, int] | None = None  # the blocks of the file the run is in, if it is
        self._back = False  # the run has gone back before where it started: it reaches both ways

    def reading(self, index: int, blocks: int, goes_on: bool, file: tuple[int, int]) -> None:
        """A read of about `blocks` blocks starts at block `index` of the file whose blocks are
        `file` ([start, end)); `goes_on`: where the last read of that file ended. Reads of
        stored blocks may say so too (a run of files goes on through them); nothing is asked
        for without peers."""
        if self._content.replicator is None:
            return
        window = self._window
        in_run = window > 0 and self._from <= index <= self._asked
        # A reader of whole files in another order than written (rsync's sorted names over a
        # folder written in readdir's hash order) lands before or past the run, in the span of
        # the folder: the run reaches out as far as NEAR windows, and from then on it asks
        # for a window behind its reads as well as ahead.
        reach = NEAR * window
        near = goes_on and window > 0 and self._from - reach <= index <= self._asked + reach
        if not (in_run or near or goes_on):
            self._window = 0
            return
        if not (in_run or near):
            self._window, self._from, self._asked, self._file = 0, index, index, file
            self._back = False
        elif file != self._file:
            self._file = None  # files read in the order written: the run goes past their ends
        self._back = self._back or index < self._from
        self._window = min(READ_AHEAD, max(READ_AHEAD_FIRST, 2 * self._window))
        if self._back and index - self._from < self._window // 2:  # a read before the run is too
            start = max(0, index - self._window)  # topped up at half its lead, as ahead (below)
            self._content.prefetch(start, self._from)
            self._from = start
        end = self._file[1] if self._file is not None else self._content.length
        stop = min(end, index + blocks + self._window)
        # Topped up once the lead is down to half the window, not at each read: a reader of
        # one-block files moves the window a block a file, and a request sent per block cost
        # each side a message, an encryption and a send of its own.
        if stop > self._asked and self._asked - (index + blocks) < self._window // 2:
            self._content.prefetch(self._asked, stop)
            self._asked = stop
