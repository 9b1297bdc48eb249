"""The walk, scheduled on the event loop: which batch of system calls runs next.

The loop owns every piece of walk state (the stack of directories to list, the queued file
batches, the tree of :mod:`efspurge.tree`, the counts and the caps); it is changed only here, on
the loop thread, so nothing needs a lock. What runs in a thread is a batch of fd-relative calls
from :mod:`efspurge.fsops` (wrapped by ``aiofiles.os.wrap``, run by the loop's default executor)
that returns its results as data; :class:`Walker` applies them.

Concurrency: an ``asyncio.Semaphore`` bounds the batches in flight: one per thread of the
loop's default executor (see :mod:`efspurge.run`) and two per worker process (the one it runs
and the next, queued on its socket: :mod:`efspurge.workers`), so a batch never waits for a
free thread and a worker never waits for its next batch. Each
dispatched batch is an asyncio task of one ``TaskGroup``, so nothing outlives the walk; a
batch that fails with an exception (a bug) stops the run as an internal error (exit 3).

Order: a LIFO stack, children on top of their parent's continuation, so the walk is depth-first
and the frontier (what is in memory) stays small. Priorities, highest first: removing finished
empty directories and deleting listed files (both free memory), then listing. Discovery
(listing) waits while the memory guard says so or while the listed-but-unprocessed entries are
over budget; deletion never waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from efspurge import fsops, tree
from efspurge.completion import Completion
from efspurge.events import EventLog
from efspurge.filebatches import FileBatches
from efspurge.plan import WalkPlan
from efspurge.ratelimit import RateGate
from efspurge.stats import Counters, StopReason
from efspurge.tree import DirNode
from efspurge.walkstate import WalkState
from efspurge.workers import WorkerPool


class Walker:
    def __init__(
        self,
        plan: WalkPlan,
        root: DirNode,
        counts: Counters,
        events: EventLog,
        pool: WorkerPool | None = None,
    ):
        self.state = WalkState(plan, root, counts, events)
        # Batches in flight: one per thread of the pool, and one per worker process.
        self.slots = asyncio.Semaphore(plan.concurrency + (pool.capacity if pool else 0))
        self.completion = Completion(self.state)
        self.file_batches = FileBatches(self.state, self.completion, pool)

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
            "concurrency": self.state.plan.concurrency,
            "dirs_waiting": len(self.state.stack),
            "file_batches_waiting": len(self.state.files),
            "queued_entries": self.state.queued_entries,
            "discovery_paused": not self.state.discovery.is_set(),
            **self.state.fds.statistics(),
        }

    @staticmethod
    def _reads(node: DirNode, result: fsops.ListResults) -> int:
        """Listing requests a step made: one per ENTRIES_PER_READ entries of the directory,
        the first included (a read that is buffered from an earlier one costs nothing)."""
        per = fsops.ENTRIES_PER_READ
        before = node.seen  # not yet updated with this step's entries
        return result.started + (before + result.entries) // per - before // per

    # --- the dispatch loop ------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    await self.slots.acquire()
                    unit = self._next_unit()
                    if unit is None:
                        self.slots.release()
                        if self.state.in_flight == 0:
                            break  # nothing runs and nothing can start: the walk is over
                        self.state.wake.clear()
                        await self.state.wake.wait()
                        continue
                    self.state.in_flight += 1
                    group.create_task(self._run_unit(unit))
            self._check_complete()
        finally:
            self.completion.close_everything()

    def _check_complete(self) -> None:
        """A walk that ends with work left and no stop asked for is a bug: say so, loudly
        (exit 3), rather than report a complete run."""
        left = (
            len(self.state.stack)
            + len(self.state.files)
            + len(self.state.refused)
            + len(self.state.remover.ready)
        )
        if left and not self.state.stopping:
            self.state.events.internal_error(
                RuntimeError(f"the walk stalled with {left} items left")
            )
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
            return self._listing_unit()
        return None

    # --- listing ----------------------------------------------------------------------------

    def _listing_unit(self) -> Callable[[], Any] | None:
        top = self.state.stack[-1]
        if top.fd is None and top.parent is not None and top.parent.fd is None:
            # Its parent's descriptor was closed to stay in budget: reopen it first.
            return self.completion.reopen_unit(top.parent)
        idle = self.state.in_flight == 0 and not self.state.files and not self.state.remover.busy
        if not self.state.discovery.is_set() and not idle:
            return None  # the memory guard pauses discovery; alone, one step at a time
        if top.listing is not None:  # a big directory's next batch: pure discovery
            if self.state.queued_entries >= self.state.plan.entry_budget and not idle:
                return None
            self.state.stack.pop()
            self.state.queued_entries -= 1
            self.state.fds.pin(top)
            return self._step_unit([top], [0], self.state.plan.batch_size)
        # New directories drain the stack (depth first), so they go on over the entry budget.
        steps, reserved = self._take_new_dirs()
        if steps:
            return self._step_unit(steps, reserved, self.state.plan.first_visit)
        if idle:
            # No descriptor can be freed for a new directory: the budget is held by big
            # directories still being listed. Go on with the nearest of those (it needs no new
            # descriptor), so that its listing ends and gives its descriptors back.
            return self._continue_deeper()
        return None

    def _continue_deeper(self) -> Callable[[], Any] | None:
        for index in range(len(self.state.stack) - 1, -1, -1):
            node = self.state.stack[index]
            if node.listing is not None:
                del self.state.stack[index]
                self.state.queued_entries -= 1
                self.state.fds.pin(node)
                return self._step_unit([node], [0], self.state.plan.batch_size)
        return None

    def _take_new_dirs(self) -> tuple[list[DirNode], list[int]]:
        """Unlisted directories from the top of the stack, whose parents are open, within the
        descriptor budget. Each is pinned: its parent (to open it) or itself (the root)."""
        steps: list[DirNode] = []
        reserved: list[int] = []
        while self.state.stack and len(steps) < self.state.plan.dirs_per_call:
            node = self.state.stack[-1]
            if node.listing is not None:
                break
            holder = node if node.fd is not None else node.parent
            if holder is None or holder.fd is None:
                break
            need = 1 if node.fd is not None else 2  # the listing (and the directory)
            self.state.fds.pin(holder)  # first: making room must not close the holder itself
            if not self.completion.make_room(need):
                self.state.fds.unpin(holder)
                break
            self.state.stack.pop()
            self.state.queued_entries -= 1
            self.state.fds.open += need
            steps.append(node)
            reserved.append(need)
        return steps, reserved

    def _step_unit(self, nodes: list[DirNode], reserved: list[int], limit: int):
        plan = self.state.plan
        granted = self.state.deletes.reserve(plan.batch_size) if plan.inline_files else None
        args = [
            (
                n.parent.fd if n.fd is None and n.parent else None,
                n.name,
                n.fd,
                n.listing,
                n.rel,
                n.key,
            )
            for n in nodes
        ]

        # The lstat and open of a new directory, and a first listing read.
        estimate = sum(2 * (node.fd is None) + (node.listing is None) for node in nodes)

        async def unit() -> None:
            if not await self.state.throttle(estimate):
                for node, need in zip(nodes, reserved, strict=True):
                    self._apply_step(node, need, None)
                self.state.deletes.settle(granted, 0)
                return
            results = await fsops.alist_steps(
                args, plan.list_rules, limit, plan.batch_size, plan.inline_rules, granted
            )
            done = [(n, r) for n, r in zip(nodes, results, strict=True) if r is not None]
            self.state.charge(estimate, sum(r.ops + self._reads(n, r) for n, r in done))
            used = 0
            for node, need, result in zip(nodes, reserved, results, strict=True):
                used += self._apply_step(node, need, result)
            self.state.deletes.settle(granted, used)

        return unit

    def _apply_step(self, node: DirNode, reserved: int, result: fsops.ListResults | None) -> int:
        """Apply one directory's step. Returns the --max-delete slots its files used."""
        holder = node if node.fd is not None else node.parent
        assert holder is not None
        self.state.fds.unpin(holder)
        self.state.fds.open -= reserved  # what was really opened is counted below
        if result is None:  # the call's entry budget ran out before this directory
            self.state.stack.append(node)
            self.state.queued_entries += 1
            return 0
        if result.refused is not None:
            self._not_entered(node, result)
            return 0
        if node.fd is None:
            assert result.fd is not None
            self.state.fds.opened(node, result.fd, result.st)
        if result.started and result.listing is not None:
            node.listing = result.listing
            self.state.fds.listing_opened(node)
        elif node.listing is not None and result.listing is None:
            self.state.fds.listing_closed(node)
        self._count_listing(node, result)
        for name in result.subdirs:
            child = tree.add_child(
                node, name, self.state.plan.child_key(node.key, name), self.state.plan.with_rel
            )
            self.state.stack.append(child)
        self.state.queued_entries += len(result.subdirs)
        used = 0
        if result.file_results is not None:
            used = result.file_results.slots_used
            self.file_batches.apply_files(node, result.file_results)
        elif result.files:
            self.file_batches.queue_files(node, result.files)
        if node.listing is not None:
            # The continuation goes below the children: they are walked first.
            self.state.stack.insert(len(self.state.stack) - len(result.subdirs), node)
            self.state.queued_entries += 1
        else:
            node.found_empty = node.seen == 0
            self.completion.release(node)
        return used

    def _count_listing(self, node: DirNode, result: fsops.ListResults) -> None:
        c = self.state.counts
        c.dirs_scanned += result.started
        c.symlinks_skipped += result.symlinks
        c.special_files_skipped += result.specials
        c.files_excluded += result.excluded_files
        c.dirs_excluded += result.excluded_dirs
        c.files_other_shards += result.other_shards
        node.seen += result.entries
        if result.kept or result.theirs_stay:
            node.kept = True
        for name, op, exc in result.errors:
            self.state.events.entry_error(c, node, name, op, exc)
        if result.debug:
            for name, reason, _ in result.debug:
                self.state.events.kept(node, name, reason)

    def _not_entered(self, node: DirNode, result: fsops.ListResults) -> None:
        """A listed directory that was not opened: finished at once."""
        kind, c = result.refused, self.state.counts
        if kind == "gone":
            c.entries_vanished += 1  # removed by someone else: no longer keeps its parent
        elif kind == "mount":
            c.mount_points_skipped += 1
            self.state.events.mount_point(node, result.refusal)
        elif kind == "changed":
            c.dirs_skipped_changed += 1
            self.state.events.changed(node, result.refusal)
        else:
            assert isinstance(result.refusal, OSError)
            self.state.events.entry_error(c, node, None, "open directory", result.refusal)
        # Finished at once, and never offered to the remover: a directory that is gone is not
        # ours to remove (or count), and one we could not enter keeps its parent.
        parent = self.completion.drop(node)
        if tree.release(parent, kept=kind != "gone"):
            self.completion.finished(parent, parent.kept)
