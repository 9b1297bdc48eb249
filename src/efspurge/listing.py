"""Listing units: the steps that list directories, and so discover the walk's work.

A unit lists a step of one or more directories in a thread (:func:`efspurge.liststep.list_steps`):
for a new directory, the lstat and the open checked by identity, then up to a limit of entries
of its listing (the plan's ``first_visit`` for new directories, ``batch_size`` for a big
directory's next batch). Its results come back as data and are applied here, on the loop:
subdirectories go on the stack, files go to :mod:`efspurge.filebatches` (or were already
deleted inline, when one thread does everything), and a directory whose listing is exhausted
releases its own hold (:mod:`efspurge.completion`).

Order: a LIFO stack, children on top of their parent's continuation, so the walk is depth-first
and the frontier (what is in memory) stays small. Listing is discovery, last in the walker's
order: it waits while the memory guard says so, and a big directory's next batch also waits
while the listed-but-unprocessed entries are over budget; when nothing else runs or waits, it
goes on anyway, one step at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from efspurge import fsops, liststep, tree
from efspurge.completion import Completion
from efspurge.filebatches import FileBatches
from efspurge.tree import DirNode
from efspurge.walkstate import WalkState


class Listing:
    """Chooses the next listing step from the stack, runs it and applies its results."""

    def __init__(self, state: WalkState, completion: Completion, file_batches: FileBatches):
        self.state = state
        self.completion = completion
        self.file_batches = file_batches
        self.running = 0  # listing steps in flight

    def listing_unit(self) -> Callable[[], Any] | None:
        if self.running >= self.state.plan.concurrency:
            # Every thread of this process lists already: more would only queue for one,
            # holding descriptors and the slots that worker processes' file batches need.
            return None
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
        over_budget = self.state.queued_entries >= self.state.plan.entry_budget
        if self.state.fds.listings_full and not over_budget:
            # As many listings open as allowed (each holds a read buffer): go on with the
            # nearest one rather than open another, so that it ends and gives its place back.
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
        # At the listing cap, new directories wait while an open listing is finished; but
        # not once that has queued the entry budget's worth of subdirectories: the queue
        # must be walked down, or a directory with millions of subdirectories would queue
        # them all.
        capped = self.state.queued_entries < self.state.plan.entry_budget
        while self.state.stack and len(steps) < self.state.plan.dirs_per_call:
            node = self.state.stack[-1]
            if node.listing is not None or (capped and self.state.fds.listings_full):
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
            self.state.fds.listings += 1  # until the step says whether it left one open
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
                n.ino,
            )
            for n in nodes
        ]

        # The lstat and open of a new directory, and a first listing read.
        estimate = sum(2 * (node.fd is None) + (node.listing is None) for node in nodes)
        self.running += 1

        async def unit() -> None:
            try:
                await step()
            finally:
                self.running -= 1

        async def step() -> None:
            if not await self.state.throttle(estimate):
                for node, need in zip(nodes, reserved, strict=True):
                    self._apply_step(node, need, None)
                self.state.deletes.settle(granted, 0)
                return
            results = await liststep.alist_steps(
                args, plan.list_rules, limit, plan.batch_size, plan.inline_rules, granted
            )
            done = [(n, r) for n, r in zip(nodes, results, strict=True) if r is not None]
            self.state.charge(estimate, sum(r.ops + self._reads(n, r) for n, r in done))
            used = 0
            for node, need, result in zip(nodes, reserved, results, strict=True):
                used += self._apply_step(node, need, result)
            self.state.deletes.settle(granted, used)

        return unit

    def _apply_step(self, node: DirNode, reserved: int, result: liststep.ListResults | None) -> int:
        """Apply one directory's step. Returns the --max-delete slots its files used."""
        holder = node if node.fd is not None else node.parent
        assert holder is not None
        self.state.fds.unpin(holder)
        self.state.fds.open -= reserved  # what was really opened is counted below
        if reserved:  # a new directory's step: its listing, if still open, is counted below
            self.state.fds.listings -= 1
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
        plan = self.state.plan
        for name, ino in zip(result.subdirs, result.subdir_inos, strict=True):
            child = tree.add_child(node, name, plan.child_key(node.key, name), plan.with_rel, ino)
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

    def _count_listing(self, node: DirNode, result: liststep.ListResults) -> None:
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
        for name in result.dirs_named_by_exclude:
            self.state.events.exclude_names_dir(node, name)
        if result.debug:
            for name, reason, _ in result.debug:
                self.state.events.kept(node, name, reason)

    def _not_entered(self, node: DirNode, result: liststep.ListResults) -> None:
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

    @staticmethod
    def _reads(node: DirNode, result: liststep.ListResults) -> int:
        """Listing requests a step made: one per ENTRIES_PER_READ entries of the directory,
        the first included (a read that is buffered from an earlier one costs nothing)."""
        per = fsops.ENTRIES_PER_READ
        before = node.seen  # not yet updated with this step's entries
        return result.started + (before + result.entries) // per - before // per
