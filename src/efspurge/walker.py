"""The walk, scheduled on the event loop: which batch of system calls runs next.

:class:`Walker` runs the dispatch loop over the parts of the walk, which share one
:class:`efspurge.walkstate.WalkState` (changed only on the loop thread, so nothing needs a lock):
the remover of empty directories (:mod:`efspurge.emptydirs`), the file batches
(:mod:`efspurge.filebatches`), the listing steps (:mod:`efspurge.listing`), and the post-order
completion and descriptor housekeeping they all use (:mod:`efspurge.completion`). It is also
the run's handle on the walk (:mod:`efspurge.run`): stop, pause discovery, statistics.

Concurrency: an ``asyncio.Semaphore`` bounds the batches in flight: one per thread of the
loop's default executor (see :mod:`efspurge.run`) and, per worker process, one per thread of
its own and one more, queued on its socket (:mod:`efspurge.workers`), so a batch never waits
for a free thread and a worker never waits for its next batch. Each
dispatched batch is an asyncio task of one ``TaskGroup``, so nothing outlives the walk; a
batch that fails with an exception (a bug) stops the run as an internal error (exit 3).

Priorities, highest first: removing finished empty directories and deleting listed files (both
free memory), then files that waited for a --max-delete slot, then listing. Discovery (listing)
waits while the memory guard says so or while the listed-but-unprocessed entries are over
budget; deletion never waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from efspurge.completion import Completion
from efspurge.events import EventLog
from efspurge.filebatches import FileBatches
from efspurge.listing import Listing
from efspurge.plan import WalkPlan
from efspurge.ratelimit import RateGate
from efspurge.stats import Counters, StopReason
from efspurge.tree import DirNode
from efspurge.walkstate import WalkState
from efspurge.workers import WorkerPool


class Walker:
    """The walk: the dispatch loop over its parts, and the run's controls (stop, pause)."""

    def __init__(
        self,
        plan: WalkPlan,
        root: DirNode,
        counts: Counters,
        events: EventLog,
        pool: WorkerPool | None = None,
    ):
        self.state = WalkState(plan, root, counts, events)
        # Batches in flight: one per thread of the pool, and the workers' depth each.
        self.max_in_flight = plan.concurrency + (pool.capacity if pool else 0)
        self.slots = asyncio.Semaphore(self.max_in_flight)
        self.completion = Completion(self.state)
        self.file_batches = FileBatches(self.state, self.completion, pool)
        self.listing = Listing(self.state, self.completion, self.file_batches)

    # --- control ----------------------------------------------------------------------------

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the run stopped (the first reason asked for), or None."""
        return self.state.stop_reason

    @property
    def stopping(self) -> bool:
        return self.state.stopping

    @property
    def rate(self) -> RateGate:
        """The --max-ops-per-second gate, whose statistics go into the records."""
        return self.state.rate

    @property
    def on_stop(self) -> Callable[[StopReason], None] | None:
        """Called once, with the first reason, when a stop is asked for."""
        return self.state.on_stop

    @on_stop.setter
    def on_stop(self, callback: Callable[[StopReason], None] | None) -> None:
        self.state.on_stop = callback

    def request_stop(self, reason: StopReason) -> None:
        """Stop handing out work; in-flight batches end early. The first reason is reported."""
        self.state.request_stop(reason)

    def set_paused(self, paused: bool) -> None:
        """The memory guard's switch: pause or resume discovery."""
        if paused:
            self.state.discovery.clear()
        else:
            self.state.discovery.set()
            self.state.wake.set()

    def statistics(self) -> dict[str, Any]:
        """How full every limit is, for the progress record."""
        return {
            "in_flight": self.state.in_flight,
            "concurrency": self.state.plan.concurrency,  # threads
            "max_in_flight": self.max_in_flight,  # the bound: threads + the workers' capacity
            "dirs_waiting": len(self.state.stack),
            "file_batches_waiting": len(self.state.files),
            "queued_entries": self.state.queued_entries,
            "discovery_paused": not self.state.discovery.is_set(),
            **self.state.fds.statistics(),
        }

    # --- the dispatch loop ------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                try:
                    await self._dispatch(group)
                except asyncio.CancelledError:
                    # The caller cancelled (asyncio.wait_for or task.cancel() around the
                    # Python API): a stop like any other. The batches in flight end early,
                    # and their results are applied (counted, in the manifest) before the
                    # cancellation goes on; dropped, their deletions would be unrecorded.
                    self.request_stop(StopReason.CANCELLED)
                    await self._drain()
                    raise
            self._check_complete()
        finally:
            self.completion.close_everything()

    async def _dispatch(self, group: asyncio.TaskGroup) -> None:
        while True:
            await self.slots.acquire()
            unit = self._next_unit()
            if unit is None:
                self.slots.release()
                if self.state.in_flight == 0:
                    return  # nothing runs and nothing can start: the walk is over
                self.state.wake.clear()
                await self.state.wake.wait()
                continue
            self.state.in_flight += 1
            group.create_task(self._run_unit(unit))

    async def _drain(self) -> None:
        """Wait until no batch is in flight, through further cancellations: the batches are
        stopping (they read the stop flag every few files), and their results must land."""
        while self.state.in_flight:
            self.state.wake.clear()
            try:
                await self.state.wake.wait()
            except asyncio.CancelledError:
                continue

    def _check_complete(self) -> None:
        """A walk that ends with work left and no stop asked for is a bug: say so, loudly
        (exit 3), rather than report a complete run."""
        state = self.state
        left = len(state.stack) + len(state.files) + len(state.refused) + len(state.remover.ready)
        if left and not state.stopping:
            state.events.internal_error(RuntimeError(f"the walk stalled with {left} items left"))
            self.request_stop(StopReason.INTERNAL)

    async def _run_unit(self, unit: Callable[[], Any]) -> None:
        try:
            await unit()
        except Exception as exc:  # a bug: stop the run, never half-continue
            self.state.events.internal_error(exc)
            self.request_stop(StopReason.INTERNAL)
        finally:
            self.state.in_flight -= 1
            self.slots.release()
            self.state.wake.set()

    def _next_unit(self) -> Callable[[], Any] | None:
        """The next batch to run, or None if nothing can start now."""
        if self.state.stopping:
            return None
        unit = self.state.remover.next_unit(
            self.completion.removal_done, self.completion.reopen_unit, self.completion.make_room
        )
        if unit is not None:
            return unit
        if self.state.files and self.file_batches.files_may_start():
            return self.file_batches.file_unit()
        if self.state.refused and self.state.deletes.reserved == 0:
            return self.file_batches.retry_refused()
        if self.state.stack:
            return self.listing.listing_unit()
        return None
