"""Read-ahead for the readers of a peer's drive: which content blocks to ask for before a read.

A block not stored here costs a round trip to a peer. A reader going through a file front to
back (`cat`), or through a tree of files in the order they were written (`tar c`, `cp -r`:
the drive appends each file's blocks after the last file's), would pay one per kernel read or
per file. So the drive's readers share runs: a read that goes on from the last one in its
file, or lands in the blocks a run has asked for so far, asks peers for a window of blocks past
its own, which doubles with each such read up to READ_AHEAD (the kernel reads 1 MiB at a time,
two at once: counting the window from a read's end keeps the next read in the run). A run stays
in the file it started in until a read of another file lands in it. A read of a file from its
start that lands within NEAR windows before or past a run goes on in it too (files read in
another order than written: rsync's sorted names over a folder `cp -a` wrote in readdir's
order), and once one has landed before it, the run asks for a window behind its reads as well.
Such a read that lands near no run starts one, and the earlier runs stay (up to RUNS): in a
folder wider than a run's reach, runs grow from where the reads land until they meet and merge,
so its reads stop costing a round trip each. Two readers of two files keep a run each. A read
anywhere else ends every run, so a reader that jumps about, or reads one file, fetches nothing
past what it reads or that file. A window is topped up once the lead is down to half of it, so
peers are asked for half a window at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

READ_AHEAD_FIRST = 8  # blocks a run asks for ahead of its first read
READ_AHEAD = 128  # and at most (8 MiB of 64 KiB blocks: 400 MB/s over a 20 ms round trip)
NEAR = 4  # windows before or past a run within which a read that goes on in its file (as one
# from the file's start does) still goes on in the run
RUNS = 32  # runs kept at once: the newest, plus earlier ones a later read may land in again


@dataclass(eq=False)  # one run is one object: `remove` finds it, not an equal one
class _Run:
    window: int  # blocks asked for ahead of a read
    start: int  # the blocks [start, asked) have been asked for
    asked: int
    file: tuple[int, int] | None  # the blocks of the file the run is in, if it is
    back: bool = False  # the run has gone back before where it started: it reaches both ways

    def near(self, index: int) -> bool:
        reach = NEAR * self.window
        return self.start - reach <= index <= self.asked + reach


class ReadAhead:
    """The read-ahead runs of one drive's content core (a `Hypercore`)."""

    def __init__(self, content: Any) -> None:
        self._content = content
        self._runs: list[_Run] = []  # the last one read in first

    def reading(self, index: int, blocks: int, goes_on: bool, file: tuple[int, int]) -> None:
        """A read of about `blocks` blocks starts at block `index` of the file whose blocks are
        `file` ([start, end)); `goes_on`: where the last read of that file ended. Reads of
        stored blocks may say so too (a run of files goes on through them); nothing is asked
        for without peers."""
        if self._content.replicator is None:
            return
        runs = self._runs
        run = next((r for r in runs if r.start <= index <= r.asked), None)
        in_run = run is not None
        if run is None and goes_on:
            # A reader of whole files in another order than written (rsync's sorted names over
            # a folder written in readdir's hash order) lands before or past a run, in the span
            # of the folder: the run reaches out as far as NEAR windows, and from then on it
            # asks for a window behind its reads as well as ahead.
            run = next((r for r in runs if r.near(index)), None)
        if run is None:
            if not goes_on:  # a jump: every run ends
                runs.clear()
                return
            # Earlier runs stay: in a folder wider than a run's reach, the reads that land
            # outside every run start one each, and those runs grow until they meet.
            run = _Run(0, index, index, file)
        else:
            runs.remove(run)
            if file != run.file:
                run.file = None  # files read in the order written: the run goes past their ends
        runs.insert(0, run)
        del runs[RUNS:]
        run.back = run.back or index < run.start
        run.window = min(READ_AHEAD, max(READ_AHEAD_FIRST, 2 * run.window))
        if run.back and index - run.start < run.window // 2:  # a read before the run is too
            start = max(0, index - run.window)  # topped up at half its lead, as ahead (below)
            self._content.prefetch(start, run.start)
            run.start = start
        end = run.file[1] if run.file is not None else self._content.length
        stop = min(end, index + blocks + run.window)
        # Topped up once the lead is down to half the window, not at each read: a reader of
        # one-block files moves the window a block a file, and a request sent per block cost
        # each side a message, an encryption and a send of its own.
        if stop > run.asked and run.asked - (index + blocks) < run.window // 2:
            self._content.prefetch(run.asked, stop)
            run.asked = stop
        self._merge(run)

    def _merge(self, run: _Run) -> None:
        """Fold into `run` the other runs its asked blocks now meet (theirs were asked too)."""
        for other in self._runs[1:]:
            if other.start <= run.asked and run.start <= other.asked:
                run.start, run.asked = min(run.start, other.start), max(run.asked, other.asked)
                run.window = max(run.window, other.window)
                run.back = run.back or other.back
                run.file = run.file if run.file == other.file else None
                self._runs.remove(other)
