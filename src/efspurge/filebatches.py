"""File batches: a directory's listed files, cut into chunks, stat'ed and deleted in a thread
or in a worker process.

A listing step hands its files here (unless it already deleted them inline). They are cut into
chunks (the plan's ``chunk_size``: at most ``--task-batch-size`` names, fewer when threads or
worker processes share a directory's files); each chunk is a hold on its directory until it is
done, and waits in the shared queue. A chunk runs in one of the loop's threads or, with
``--processes``, goes to an idle worker process with the directory's descriptor. Chunks of
several small directories share one batch, in a worker or in the loop's single thread (a
local disk), so that a tree of small directories pays one hand-off per batch, not per
directory; with many threads (a network filesystem) a batch is one chunk, waiting on its own
round trips. Either way the results come back as data and are applied here, on the loop.
File batches come before listing in the walker's order and never wait for the memory guard:
deleting frees memory.

The --max-delete cap is exact: a batch reserves its slots before it starts and settles them
when it is done. Expired files a batch could not get a slot for are put aside ("refused") and
retried once no batch holds any slot: then they get the slots given back, or, if none are
left, the cap is reached exactly and the run stops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from efspurge import filepurge, tree
from efspurge.completion import Completion
from efspurge.stats import StopReason
from efspurge.tree import DirNode
from efspurge.walkstate import WalkState
from efspurge.workers import FileJob, WorkerPool

# Directories' files in one call of the loop's single thread (a local disk with worker
# processes): one hand-off for many small directories, as for a worker's batch.
THREAD_DIRS_PER_BATCH = 64
# Characters of directory paths in one batch, at most (past its first directory): 64 paths of
# 4,000 nested 255-character names made batches and replies of hundreds of MB (found by
# review). Everyday paths never come near it.
BATCH_PATHS_MAX = 1 << 20


class FileBatches:
    """Queues a directory's files in chunks, runs them in a thread or a worker, applies the
    results and keeps the --max-delete reservations exact."""

    def __init__(self, state: WalkState, completion: Completion, pool: WorkerPool | None) -> None:
        self.state = state
        self.completion = completion
        self.pool = pool

    def queue_files(self, node: DirNode, names: list[str]) -> None:
        size = self.state.plan.chunk_size
        chunks = [names[i : i + size] for i in range(0, len(names), size)]
        tree.add_work(node, len(chunks))
        self.state.files.extend((node, chunk) for chunk in chunks)
        self.state.queued_entries += len(names)

    def files_may_start(self) -> bool:
        """With worker processes, files go to an idle worker; the loop's own thread takes a
        file batch only when the workers are well behind (it has the listing to do, and it
        shares this process's GIL with the loop)."""
        if self.pool is None or self.pool.idle() is not None:
            return True
        return self.state.queued_entries > 2 * self.state.plan.chunk_size * len(self.pool.workers)

    def file_unit(self) -> Callable[[], Any] | None:
        node, _ = self.state.files[0]
        if node.fd is None:
            # Closed to stay in budget meanwhile: reopen it, then come back to these files.
            return self.completion.reopen_unit(node)
        worker = self.pool.idle() if self.pool is not None else None
        if worker is not None:
            return self._worker_unit(worker)
        # One thread (a local disk): several small directories' files in one call, as for a
        # worker. Several threads (a network filesystem): one directory's chunk per call, so
        # that each waits on its own round trips.
        most = THREAD_DIRS_PER_BATCH if self.state.plan.concurrency == 1 else 1
        batch, total = self._take(most)
        granted = self.state.deletes.reserve(total)
        plan = self.state.plan

        async def unit() -> None:
            if not await self.state.throttle(total):
                self._put_back(batch, granted)
                return
            jobs = [(node.fd, names, node.rel) for node, names in batch]
            results = await filepurge.apurge_dirs(jobs, plan.file_rules, granted)
            self._files_done(batch, results, granted)

        return unit

    def _worker_unit(self, worker) -> Callable[[], Any]:
        """Batches of several directories' files for a worker process, with their descriptors
        (one directory's files per batch when the worker has threads: each batch then waits on
        its own round trips, in its own thread)."""
        batch, total = self._take(self.pool.dirs_per_batch)
        granted = self.state.deletes.reserve(total)
        worker.in_flight += 1

        async def unit() -> None:
            if not await self.state.throttle(total):
                worker.in_flight -= 1
                self._put_back(batch, granted)
                return
            fds = [node.fd for node, _ in batch]
            jobs = [FileJob(names, node.rel) for node, names in batch]
            try:
                results = await worker.run(fds, jobs, granted)
            finally:
                worker.in_flight -= 1
            self._files_done(batch, results, granted)

        return unit

    def _take(self, most: int) -> tuple[list[tuple[DirNode, list[str]]], int]:
        """Queued chunks from the front, of up to ``most`` directories and about a chunk's
        worth of files (the first chunk always), each pinned until its batch is done. Stops at
        a directory whose descriptor was closed meanwhile: file_unit reopens it first."""
        batch: list[tuple[DirNode, list[str]]] = []
        total = paths = 0
        while self.state.files and len(batch) < most and total < self.state.plan.chunk_size:
            node, names = self.state.files[0]
            if node.fd is None:
                break
            if node.relpaths:  # each directory's path travels with the batch, and its lines
                paths += len(node.rel or "")
                if batch and paths > BATCH_PATHS_MAX:
                    break
            self.state.files.popleft()
            self.state.queued_entries -= len(names)
            self.state.fds.pin(node)
            batch.append((node, names))
            total += len(names)
        return batch, total

    def _files_done(
        self,
        batch: list[tuple[DirNode, list[str]]],
        results: list[filepurge.FileResults],
        granted: int | None,
    ) -> None:
        """File batches done, in a thread or a worker: count, settle the caps, release."""
        self.state.charge(sum(len(names) for _, names in batch), sum(r.ops for r in results))
        used = 0
        for (node, _), result in zip(batch, results, strict=True):
            self.state.fds.unpin(node)
            used += result.slots_used
            self.apply_files(node, result)
            self.completion.release(node)
        self.state.deletes.settle(granted, used)

    def _put_back(self, batch: list[tuple[DirNode, list[str]]], granted: int | None) -> None:
        """File batches that did not start (the run is stopping): as they were."""
        for node, names in reversed(batch):
            self.state.fds.unpin(node)
            self.state.files.appendleft((node, names))
            self.state.queued_entries += len(names)
        self.state.deletes.settle(granted, 0)

    def apply_files(self, node: DirNode, r: filepurge.FileResults) -> None:
        c = self.state.counts
        c.files_scanned += r.scanned
        c.files_to_purge += r.selected
        c.bytes_to_purge += r.selected_bytes
        c.files_purged += r.purged
        c.bytes_freed += r.freed_bytes
        c.entries_vanished += r.vanished
        c.breakdown.add(node.top, r.selected, r.selected_bytes, r.by_age)
        if r.kept:
            node.kept = True
        for name, op, exc in r.errors:
            self.state.events.entry_error(c, node, name, op, exc)
        if r.lines:
            self.state.events.manifest_lines(r.lines)
        for name, what, st in r.debug:
            self.state.events.file_decision(node, name, what, st)
        if r.refused:
            tree.add_work(node)
            self.state.refused.append((node, r.refused))

    def retry_refused(self) -> Callable[[], Any] | None:
        """Expired files refused for want of a --max-delete slot, now that no batch holds any:
        if slots are left (a batch gave some back), they get them; if none, the cap is reached
        exactly and the run stops."""
        if self.state.deletes.full:
            self.state.events.limit_reached(
                "Deletion limit reached: stopping, the other old files stay until a later run",
                {"max_delete": self.state.plan.max_delete},
            )
            self.state.request_stop(StopReason.MAX_DELETE)
            for node, _ in self.state.refused:
                self.completion.release(node, kept=True)
            self.state.refused.clear()
            return None
        node, names = self.state.refused.pop()  # its hold on the node passes to the file batch
        self.state.files.appendleft((node, names))
        self.state.queued_entries += len(names)
        return self.file_unit()
