"""The walk's state, shared by the parts of the scheduler: one object, changed on the loop only.

The loop owns every piece of walk state (the stack of directories to list, the queued file
batches, the tree of :mod:`efspurge.tree`, the counts and the caps). It lives in one
:class:`WalkState`, shared by the parts of the scheduler (:mod:`efspurge.walker`,
:mod:`efspurge.listing`, :mod:`efspurge.filebatches`, :mod:`efspurge.completion`) and changed
only by them, on the loop thread, so nothing needs a lock. What runs in a thread is a batch of
fd-relative calls (:mod:`efspurge.liststep`, :mod:`efspurge.filepurge`,
:mod:`efspurge.dirremoval`, on the primitives of :mod:`efspurge.fsops`; wrapped by
``aiofiles.os.wrap``, run by the loop's default executor) that returns its results as data;
the parts apply them here.

The stop and the rate gate are here too: every part asks whether the run is stopping, and
every batch, whichever part made it, waits at the same gate.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from efspurge.emptydirs import EmptyDirRemover
from efspurge.events import EventLog
from efspurge.plan import WalkPlan
from efspurge.ratelimit import RateGate
from efspurge.stats import Counters, StopReason
from efspurge.tree import Counter, Descriptors, DirNode


class WalkState:
    """Everything the walk's parts share: the work waiting, the budgets, the caps, the stop."""

    def __init__(self, plan: WalkPlan, root: DirNode, counts: Counters, events: EventLog):
        self.plan = plan
        self.root = root
        self.counts = counts
        self.events = events
        self.fds = Descriptors(plan.fd_budget)
        self.fds.open = 1  # the root's descriptor, opened by the caller, never closed here
        self.deletes = Counter(plan.max_delete)
        self.stack: list[DirNode] = [root]  # directories waiting for a listing step
        self.files: deque[tuple[DirNode, list[str]]] = deque()  # file batches waiting
        self.refused: list[tuple[DirNode, list[str]]] = []  # waiting for a --max-delete slot
        self.queued_entries = 1  # names and directories listed but not yet handled: the root
        self.remover = EmptyDirRemover(plan, counts, events, self.fds)
        events.stop = self.request_stop
        self.in_flight = 0  # units running: counted by the walker's dispatch loop
        self.wake = asyncio.Event()  # the dispatch loop waits on it when nothing can start
        self.discovery = asyncio.Event()  # cleared by the memory guard
        self.discovery.set()
        self.stop_reason: StopReason | None = None
        self.rate = RateGate(plan.ops_per_second)
        self.remover.throttle, self.remover.charge = self.throttle, self.charge
        self.on_stop: Callable[[StopReason], None] | None = None

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def request_stop(self, reason: StopReason) -> None:
        """Stop handing out work; in-flight batches end early. The first reason is reported."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.plan.stop.set()
            if self.on_stop is not None:
                self.on_stop(reason)
        self.wake.set()

    def charge(self, estimate: int, actual: int) -> None:
        self.rate.charge(estimate, actual)

    async def throttle(self, ops: int) -> bool:
        return await self.rate.throttle(ops, lambda: self.stopping)
