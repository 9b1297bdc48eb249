"""The bounded, thread-safe work queue that feeds the I/O worker threads.

Two kinds of work wait here:

* chunks: lists of already-listed regular files of one directory, to lstat and maybe unlink;
* directories: a directory to open, or to continue listing (one ``--task-batch-size`` batch
  per visit).

Chunks always go first: they delete, and deleting releases memory and descriptors. Listing a
directory creates work, so it is the thing held back: it starts only while the number of
listed-but-unprocessed entries is under ``entry_budget``, and not while the memory guard has
paused discovery. Both stacks are LIFO, so the walk is depth-first and the set of waiting
directories stays proportional to depth x batch size rather than to the size of the tree.

A worker that finds nothing to do waits on the condition. When no worker is busy and nothing
is queued, the walk is finished and every waiting worker is released. Worker threads are
started lazily, one per item that no idle worker can take, up to ``max_workers``: a small tree
never starts hundreds of threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class QueueStats:
    """How full the queue is, for the progress record."""

    dirs_queued: int
    chunks_queued: int
    workers_busy: int
    workers_alive: int
    entries_outstanding: int
    discovery_paused: bool


class WorkQueue:
    def __init__(
        self,
        *,
        max_workers: int,
        listing_reservation: int,
        entry_budget: int,
        spawn: Callable[[], bool],
        wanted: Callable[[Any], int] | None = None,
        min_grant: int = 128,
    ) -> None:
        if entry_budget < listing_reservation:
            raise ValueError("entry budget must hold at least one listing batch")
        self._cond = threading.Condition(threading.Lock())
        self._dirs: list[Any] = []
        self._chunks: list[Any] = []
        self._max_workers = max_workers
        self._reservation = listing_reservation
        # A listing may start with less than a full batch when the budget is tight: many small
        # directories can then be listed at once. It reads no more entries than it was granted.
        self._min_grant = min(min_grant, listing_reservation)
        self._budget_total = entry_budget
        self._budget_free = entry_budget
        self._spawn = spawn
        self._wanted = wanted
        self._alive = 0
        self._started = 0  # workers ever started
        self._idle = 0  # workers waiting on the condition
        self._notified = 0  # ...of which already woken for an item, not yet running
        self._starting = 0  # workers started for an item, not yet asking for it
        self._busy = 0
        self._finished = False
        self._stopping = False
        self._paused = False
        self._on_all_exited: Callable[[], None] | None = None

    # --- producers ------------------------------------------------------------------------

    def put(self, dirs: Sequence[Any] = (), chunks: Sequence[Any] = ()) -> None:
        """Queue work. Chunks must already hold their entries' share of the budget."""
        with self._cond:
            self._dirs.extend(dirs)
            self._chunks.extend(chunks)
            self._dispatch()

    def _ready(self) -> int:
        """How many queued items a worker could take right now."""
        ready = len(self._chunks)
        if self._dirs and not self._paused:
            ready += min(len(self._dirs), self._budget_free // self._min_grant)
        return ready

    def _dispatch(self) -> None:
        # Caller holds the lock. Called wherever work may have become takeable: new items,
        # budget given back, an item taken. Each ready item gets exactly one worker on its way:
        # a waiting one woken, or a new one started. Workers already woken or starting count,
        # so the same item never wakes a second thread (a woken thread that finds nothing
        # costs a context switch and a GIL hand-off, and hundreds of them cost seconds).
        need = self._ready() - self._notified - self._starting
        if need <= 0 and self._alive == 0 and (self._dirs or self._chunks):
            # Everything queued is paused and no worker exists to let it through (see get()):
            # start one, or the run would wait forever.
            need = 1
        if need <= 0:
            return
        wake = min(need, self._idle - self._notified)
        if wake > 0:
            self._cond.notify(wake)
            self._notified += wake
            need -= wake
        for _ in range(min(need, self._max_workers - self._alive)):
            if not self._spawn():
                break
            self._alive += 1
            self._started += 1
            self._starting += 1

    def _wake_all(self) -> None:
        self._cond.notify_all()
        self._notified = self._idle

    def worker_started(self) -> None:
        """A worker thread started by the queue is now asking for work."""
        with self._cond:
            self._starting = max(0, self._starting - 1)

    # --- consumers ------------------------------------------------------------------------

    def get(self) -> tuple[Any, int] | None:
        """Block until there is work: (item, granted entries for a listing). None: exit."""
        with self._cond:
            while True:
                if self._stopping or self._finished:
                    return None
                taken = self._take()
                if taken is not None:
                    self._busy += 1
                    self._dispatch()
                    return taken
                if self._busy == 0:
                    if not self._dirs and not self._chunks:
                        self._finished = True
                        self._wake_all()
                        return None
                    # Only paused directories remain and nothing runs that could lower memory:
                    # waiting would hang forever. Let one through.
                    if self._dirs:
                        self._busy += 1
                        return self._take_dir()
                self._idle += 1
                self._cond.wait()
                self._idle -= 1
                if self._notified:
                    self._notified -= 1

    def _take(self) -> tuple[Any, int] | None:
        if self._chunks:
            return self._chunks.pop(), 0
        if self._dirs and not self._paused and self._budget_free >= self._min_grant:
            return self._take_dir()
        return None

    def _take_dir(self) -> tuple[Any, int]:
        item = self._dirs.pop()
        want = self._reservation if self._wanted is None else self._wanted(item)
        grant = max(self._min_grant, min(want, self._budget_free))
        self._budget_free -= grant
        return item, grant

    def release(self, entries: int) -> None:
        """Give back part of a listing's grant before the item is done."""
        if entries:
            with self._cond:
                self._budget_free += entries
                self._dispatch()

    def done(self, released_entries: int) -> None:
        """A worker finished an item and gives back ``released_entries`` of the budget."""
        with self._cond:
            self._busy -= 1
            self._budget_free += released_entries
            if self._busy == 0 and not self._ready():
                self._wake_all()  # maybe finished, or only paused work is left: let them see
            else:
                self._dispatch()

    def worker_exited(self) -> None:
        with self._cond:
            self._alive -= 1
            callback = self._on_all_exited if self._alive == 0 else None
        if callback is not None:
            callback()

    # --- control --------------------------------------------------------------------------

    def on_all_exited(self, callback: Callable[[], None]) -> None:
        with self._cond:
            self._on_all_exited = callback

    def stop(self) -> None:
        """No new item is handed out; workers finish the one they hold and exit."""
        with self._cond:
            self._stopping = True
            self._wake_all()

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            self._paused = paused
            if not paused:
                self._dispatch()

    def drain(self) -> list[Any]:
        """After the workers exited: whatever was still queued (to release its resources)."""
        with self._cond:
            left = self._dirs + self._chunks
            self._dirs.clear()
            self._chunks.clear()
            return left

    @property
    def finished(self) -> bool:
        with self._cond:
            return self._finished

    @property
    def started(self) -> int:
        """Workers ever started (a worker may already have finished and exited)."""
        with self._cond:
            return self._started

    @property
    def alive(self) -> int:
        with self._cond:
            return self._alive

    def stats(self) -> QueueStats:
        with self._cond:
            return QueueStats(
                dirs_queued=len(self._dirs),
                chunks_queued=len(self._chunks),
                workers_busy=self._busy,
                workers_alive=self._alive,
                entries_outstanding=self._budget_total - self._budget_free,
                discovery_paused=self._paused,
            )
