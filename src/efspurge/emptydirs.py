"""The one remover of empty directories, post-order, with the exact per-run cap.

Post-order completion (:class:`efspurge.completion.Completion`) offers a directory when it is
finished (everything below it decided) and nothing was kept in it. The remover takes the
offered directories in batches, one batch in flight at a time, and reserves the cap's slots
before the thread runs ``rmdir`` (:mod:`efspurge.dirremoval`): so the cap
(``--max-empty-dirs-to-delete``) is never exceeded and, since a parent is offered only after
its children's outcomes are in, children always go before parents.

A dry run goes through this same remover; :func:`efspurge.fsops.remove_dir` skips only the
system call, so a dry run reports exactly the directories a real run removes (a real run's
``rmdir`` can still meet a file created meanwhile: then it is "busy", and kept).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from efspurge import dirremoval, fsops
from efspurge.events import EventLog
from efspurge.plan import WalkPlan
from efspurge.stats import Counters
from efspurge.tree import Counter, Descriptors, DirNode

REMOVALS_PER_CALL = 256


class Decision(enum.Enum):
    REMOVE = "remove"  # offer it to the remover
    KEEP = "keep"  # it stays, and so its parent stays
    SKIP = "skip"  # not ours to count (a sharded dry run), and it does not keep its parent


class EmptyDirRemover:
    def __init__(self, plan: WalkPlan, counts: Counters, events: EventLog, fds: Descriptors):
        self.plan = plan
        self.counts = counts
        self.events = events
        self.fds = fds
        self.cap = Counter(plan.max_empty_dirs)
        self.ready: deque[DirNode] = deque()
        self.in_flight = False
        self.throttle: Callable[[int], Awaitable[bool]] | None = None  # the rate limit
        self.charge: Callable[[int, int], None] | None = None

    @property
    def busy(self) -> bool:
        return self.in_flight or bool(self.ready)

    def decide(self, node: DirNode, kept: bool, stopping: bool) -> Decision:
        """What becomes of a finished directory."""
        plan = self.plan
        if not plan.remove_empty_dirs or kept or stopping:
            return Decision.KEEP
        st = node.st
        protected = plan.file_rules.protected
        if protected and st is not None and (st.st_dev, st.st_ino) in protected:
            # It holds this run's manifest or metrics file (maybe not written yet).
            self.events.kept(node.parent, node.name, "holds efspurge's own output")
            return Decision.KEEP
        if self._young(node):
            # Found empty, and its own mtime is recent: an application probably just made it
            # for use (the opt-in rail --keep-empty-dirs-newer-than).
            self.counts.young_dirs_kept += 1
            self.events.kept(node.parent, node.name, "young empty directory")
            return Decision.KEEP
        if plan.dry_run and plan.shard is not None and not plan.shard.owns_dir(node.key):
            return Decision.SKIP  # a sharded dry run counts each directory in one shard only
        return Decision.REMOVE

    def _young(self, node: DirNode) -> bool:
        cutoff = self.plan.young_dir_cutoff_ns
        return (
            cutoff is not None
            and node.found_empty
            and node.st is not None
            and node.st.st_mtime_ns > cutoff
        )

    def _over_limit(self, node: DirNode) -> None:
        self.events.limit_reached(
            "Empty-directory limit reached: the other empty directories stay until a later run",
            {"max_empty_dirs_to_delete": self.plan.max_empty_dirs},
        )
        self.events.kept(node.parent, node.name, "empty-directory limit reached")

    def offer(self, node: DirNode) -> None:
        self.ready.append(node)

    def waiting_on(self, parent: DirNode) -> list[DirNode]:
        """Offered directories whose parent can no longer be opened: they stay."""
        stuck = [node for node in self.ready if node.parent is parent]
        for node in stuck:
            self.ready.remove(node)
            self.counts.dirs_skipped_changed += 1
        return stuck

    def next_unit(
        self,
        done: Callable[[DirNode, bool], None],
        reopen: Callable[[DirNode], Any],
        room: Callable[[int], bool],
    ) -> Callable[[], Any] | None:
        """The next removal batch, a reopen it needs first, or None. ``room(n)`` closes idle
        descriptors until n more fit the budget."""
        if self.in_flight or not self.ready:
            return None
        batch: list[tuple[DirNode, dirremoval.Removal]] = []
        reopening: set[DirNode] = set()
        while self.ready and len(batch) < REMOVALS_PER_CALL:
            node = self.ready[0]
            if self.cap.exhausted:
                self.ready.popleft()
                self._over_limit(node)
                done(node, True)
                continue
            parent = node.parent
            assert parent is not None
            if parent.fd is not None:
                self.fds.pin(parent)
                removal = dirremoval.Removal(parent.fd, node.name, st=node.st)
            elif node.fd is not None and parent not in reopening and self._room_via(node, room):
                # Reopen the parent through '..' of this directory, checked by identity.
                reopening.add(parent)
                self.fds.open += 1
                removal = dirremoval.Removal(None, node.name, node.fd, parent.st, node.st)
            elif batch or parent in reopening:
                break
            else:
                return reopen(parent)
            self.ready.popleft()
            batch.append((node, removal))
        if not batch:
            return None
        return self._unit(batch, done)

    def _room_via(self, node: DirNode, make_room: Callable[[int], bool]) -> bool:
        """Pin ``node`` (its descriptor reopens the parent), then make room for the parent's."""
        self.fds.pin(node)  # first: making room must not close this very descriptor
        if make_room(1):
            return True
        self.fds.unpin(node)
        return False

    def _unit(self, batch: list[tuple[DirNode, dirremoval.Removal]], done) -> Callable[[], Any]:
        granted = self.cap.reserve(len(batch))
        self.in_flight = True
        plan = self.plan
        # System calls: an lstat (is it still the walked directory?) and the rmdir, which a
        # dry run skips.
        estimate = 2 * len(batch)
        actual = len(batch) if plan.dry_run else estimate

        async def unit() -> None:
            if self.throttle is not None and not await self.throttle(estimate):
                self.in_flight = False
                self.cap.settle(granted, 0)
                for node, removal in reversed(batch):  # as they were: the run is stopping
                    self._release_fds(node, removal)
                    self.ready.appendleft(node)
                return
            removals = [removal for _, removal in batch]
            try:
                used = await dirremoval.aremove_dirs(
                    removals, granted, plan.dry_run, plan.list_rules.noatime
                )
            finally:
                self.in_flight = False
            if self.charge is not None:
                self.charge(estimate, actual)
            self.cap.settle(granted, used)
            for node, removal in batch:
                self._release_fds(node, removal)
                done(node, self._apply(node, removal))

        return unit

    def _release_fds(self, node: DirNode, removal: dirremoval.Removal) -> None:
        parent = node.parent
        assert parent is not None
        if removal.parent_fd is not None:
            self.fds.unpin(parent)
            return
        self.fds.unpin(node)
        self.fds.open -= 1
        if removal.reopened_fd is not None:
            if parent.fd is None:
                self.fds.opened(parent, removal.reopened_fd, None)
            else:
                fsops.close(removal.reopened_fd)

    def _apply(self, node: DirNode, removal: dirremoval.Removal) -> bool:
        """Count one outcome. Returns True when the parent must stay (it keeps an entry)."""
        c, outcome = self.counts, removal.outcome
        if outcome == "removed":
            c.empty_dirs_to_delete += 1
            if not self.plan.dry_run:
                c.empty_dirs_deleted += 1
            self.events.dir_removed(node)
            return False
        if outcome == "gone":
            c.entries_vanished += 1  # removed by someone else: the parent may be empty
            return False
        if outcome == "busy":
            # Not empty after all: a file created meanwhile, an NFS .nfsXXXX file, or (with
            # shards) another shard still working in it, which says nothing about the parent.
            return self.plan.shard is None
        if outcome == "refused":
            self._over_limit(node)
        elif outcome == "changed":
            c.dirs_skipped_changed += 1
            self.events.changed(node, removal.error)
        else:
            assert isinstance(removal.error, OSError)
            self.events.entry_error(c, node, None, "rmdir", removal.error)
        return True
