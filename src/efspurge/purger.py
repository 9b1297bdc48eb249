"""AsyncPurger: wires the walk, the thread pool, the guard, progress, signals and the stats.

The event loop does the supervising; the I/O happens in a thread pool that the loop owns as its
default executor, sized from the settings (not asyncio's default of cpu_count + 4, which would
cap a network filesystem at a handful of requests in flight). Each pool thread runs a worker
loop that takes batches of work from a bounded queue, so the per-file cost is a plain function
call, not an asyncio future.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from efspurge import fsops, mounts
from efspurge.manifest import Manifest
from efspurge.memory import MemoryGuard
from efspurge.policy import AgePolicy
from efspurge.processes import ChildProcesses, available_cpus, process_settings
from efspurge.selection import Selector
from efspurge.settings import Settings, SettingsError
from efspurge.shard import Shard
from efspurge.stats import (
    RunReport,
    add_record_counts,
    final_record,
    merge_breakdowns,
    merge_report_records,
    peak_rss_mb,
    total,
)
from efspurge.terminal import TerminalUI
from efspurge.walker import Walker
from efspurge.workqueue import WorkQueue

# Threads used on a network filesystem when --io-threads is auto (capped by --max-concurrency).
# Measured on slowfs (PERFORMANCE.md): past a few hundred threads two cores are saturated by
# the GIL and the FUSE round trips, and more threads only add contention.
NETWORK_IO_THREADS = 256
# Files per chunk on a network filesystem. Unlinks in one directory serialize on its lock, so
# more threads per directory buy only parallel lstats, and cost GIL hand-offs: measured on
# slowfs (balanced 20k, 200 files per leaf), 128-file chunks 0.90-1.22 s, 512-file chunks
# 0.69-0.82 s, 1024 and whole batches no better than 512. A huge directory still gets one
# thread per 512 entries, for lstats that the attribute cache does not answer.
NETWORK_CHUNK_SIZE = 512
# Listed-but-unprocessed entries allowed, in listing batches: bounds memory by construction.
ENTRY_BUDGET_BATCHES = 8

EXIT_OK = 0
EXIT_ENTRY_ERRORS = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
EXIT_MAX_DELETE = 4
EXIT_MAX_RUNTIME = 5
EXIT_METRICS = 6
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


@dataclass(frozen=True, slots=True)
class RootInfo:
    path: str
    fd: int
    st: os.stat_result
    fs_type: str | None


def prepare_root(raw_path: str) -> RootInfo:
    """Resolve the root once (it may be reached through a symlink) and check it.

    Raises SettingsError with a one-line message; nothing is changed on disk.
    """
    resolved = os.path.realpath(raw_path)
    if resolved == "/":
        raise SettingsError(f"PATH: refusing to purge the filesystem root ({raw_path!r})")
    try:
        fd, st = fsops.open_root(resolved)
    except OSError as exc:
        reasons = {
            errno.ENOENT: "does not exist",
            errno.ENOTDIR: "is not a directory",
            errno.EACCES: "cannot be opened: permission denied",
            errno.ELOOP: "is a symlink that changed while starting",
        }
        reason = reasons.get(exc.errno, f"cannot be opened: {exc.strerror}")
        raise SettingsError(f"PATH: {raw_path!r} {reason}") from None
    fs_type = mounts.filesystem_type(resolved, st.st_dev)
    if mounts.is_pseudo(fs_type):
        fsops.close(fd)
        raise SettingsError(
            f"PATH: {raw_path!r} is on a {fs_type} pseudo-filesystem, which is never purged"
        )
    return RootInfo(resolved, fd, st, fs_type)


def choose_io_threads(settings: Settings, fs_type: str | None) -> int:
    if settings.io_threads is not None:
        wanted = settings.io_threads
    elif mounts.is_local(fs_type):
        # Local metadata calls take microseconds: more threads only contend for the GIL
        # (measured: 2 threads are 2x slower than 1 on tmpfs).
        wanted = 1
    else:
        wanted = NETWORK_IO_THREADS
    return max(1, min(wanted, settings.max_concurrency))


def choose_processes(settings: Settings, fs_type: str | None) -> int:
    """Local shard processes for this run (see efspurge.processes)."""
    if settings.processes is not None:
        wanted = settings.processes
    elif mounts.is_local(fs_type) and available_cpus() >= 2:
        # Measured on tmpfs: two processes 1.23-1.25x find's time, one 1.55-1.7x. More do
        # not pay on a local disk (directory locks, memory: ~25 MB each).
        wanted = 2
    else:
        wanted = 1  # a network filesystem waits on round trips: threads cover that
    # Each process needs a share of at least 1 of every cap in force (0 means no cap).
    for cap in (settings.max_delete, settings.max_empty_dirs_to_delete, settings.max_concurrency):
        if cap:
            wanted = min(wanted, cap)
    return max(1, wanted)


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


@dataclass(slots=True)
class Outcome:
    record: dict[str, object]
    exit_code: int


def open_manifest(settings: Settings) -> Manifest | None:
    """Open --manifest before anything is deleted. Raises SettingsError if it cannot be."""
    if settings.manifest is None:
        return None
    try:
        return Manifest(settings.manifest)
    except OSError as exc:
        raise SettingsError(
            f"--manifest: cannot write {settings.manifest!r}: {exc.strerror}"
        ) from None


class AsyncPurger:
    def __init__(
        self,
        settings: Settings,
        root: RootInfo,
        logger: logging.Logger,
        manifest: Manifest | None = None,
        ui: TerminalUI | None = None,
        local_child: bool = False,
        children: ChildProcesses | None = None,
    ) -> None:
        self.settings = settings
        self.ui = ui
        self.root = root
        self.log = logger
        self.manifest = manifest if manifest is not None else open_manifest(settings)
        now_ns = time.time_ns()
        self.policy = AgePolicy.from_days(
            settings.max_age_days, now_ns=now_ns, age_by=settings.age_by
        )
        self.io_threads = choose_io_threads(settings, root.fs_type)
        # With --processes, the children are already forked and this process walks shard 0,
        # with its share of the caps.
        self.children = children
        self.processes = children.count if children is not None else 1
        own = process_settings(settings, 0, self.processes) if self.processes > 1 else settings
        # One thread processes each listing batch whole, in the thread that listed it; several
        # threads share a batch in chunks, so that one big directory's lstats run in parallel.
        batch = settings.task_batch_size
        self.chunk_size = batch if self.io_threads == 1 else min(batch, NETWORK_CHUNK_SIZE)
        fd_limit = raise_fd_limit()
        self.walker = Walker(
            root_path=root.path,
            root_fd=root.fd,
            root_st=root.st,
            policy=self.policy,
            dry_run=settings.dry_run,
            remove_empty_dirs=settings.remove_empty_dirs,
            max_empty_dirs=own.max_empty_dirs_to_delete,
            batch_size=settings.task_batch_size,
            chunk_size=self.chunk_size,
            park_threshold=max(64, fd_limit // 4),
            logger=logger,
            selector=Selector(settings.include, settings.exclude, settings.exclude_dir),
            one_file_system=settings.one_file_system,
            mount_paths=mounts.mount_points_below(root.path),
            max_delete=own.max_delete,
            keep_young_dirs=settings.keep_young_dirs,
            shard=Shard(own.shard_index, own.shard_count, group=self.processes),
            manifest=self.manifest,
            now_ns=now_ns,
            listing_events=not local_child,
        )
        self.guard: MemoryGuard | None = None
        self._signal: int | None = None
        self._started = 0.0

    # --- the run --------------------------------------------------------------------------

    async def run(self) -> Outcome:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(self.io_threads, thread_name_prefix="efspurge-io")
        loop.set_default_executor(executor)
        all_exited = asyncio.Event()

        def spawn() -> bool:
            try:
                executor.submit(self.walker.worker_loop)
            except RuntimeError:  # no more threads can be started: run with what we have
                return False
            return True

        batch = self.settings.task_batch_size
        queue = WorkQueue(
            max_workers=self.io_threads,
            listing_reservation=batch,
            entry_budget=batch * ENTRY_BUDGET_BATCHES,
            spawn=spawn,
            wanted=self.walker.listing_want,
        )
        queue.on_all_exited(lambda: loop.call_soon_threadsafe(all_exited.set))
        self.walker.attach(queue)
        self.guard = MemoryGuard(self.settings.memory_limit_mb, queue.set_paused, self.log)

        self._log_start()
        self._install_signal_handlers(loop)
        self._started = time.monotonic()
        background = [asyncio.create_task(self.guard.run())]
        runtime_limit = None
        if self.settings.max_runtime > 0:
            runtime_limit = asyncio.create_task(self._runtime_limit())
            background.append(runtime_limit)
        if self.settings.progress_interval > 0:
            background.append(asyncio.create_task(self._progress_loop(queue)))
        if self.ui is not None:
            self.ui.start()
            background.append(asyncio.create_task(self._ui_loop()))
        try:
            queue.put(dirs=[self.walker.root])
            if queue.started == 0:
                raise RuntimeError("could not start any I/O thread")
            if self.children is not None:
                await self.children.attach(self.log)
            await all_exited.wait()
            if runtime_limit is not None:
                # This walk is over; a child that runs on keeps its own time budget.
                runtime_limit.cancel()
            if self.children is not None:
                await self.children.wait()
        finally:
            if self.children is not None:
                self.children.kill()  # only if something above failed: they are done otherwise
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            self._remove_signal_handlers(loop)
            self.walker.close_all()
            executor.shutdown(wait=True)
            if self.manifest is not None:
                self.manifest.close()
            if self.ui is not None:
                self.ui.stop()
        outcome = self._outcome(time.monotonic() - self._started)
        if self.ui is not None:
            self.ui.summary(outcome.record)
        return outcome

    async def _runtime_limit(self) -> None:
        await asyncio.sleep(self.settings.max_runtime)
        self.log.warning(
            "Maximum runtime reached: finishing in-flight operations, then stopping",
            extra={"extra_fields": {"max_runtime_seconds": self.settings.max_runtime}},
        )
        self.walker.request_stop("max_runtime")

    # --- signals --------------------------------------------------------------------------

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._signal is not None:
            # A second signal: the user insists. Every system call is atomic, so exiting now
            # leaves nothing half-deleted; only the final record is lost.
            self.log.warning(f"Second {name}: exiting at once", extra={"extra_fields": {}})
            if self.children is not None:
                self.children.kill()
            os._exit(128 + signum)
        self._signal = signum
        if self.children is not None:
            self.children.send_signal(signum)
        self.log.warning(
            f"Received {name}: finishing in-flight operations, then stopping",
            extra={"extra_fields": {"signal": name}},
        )
        self.walker.request_stop(name)

    # --- records --------------------------------------------------------------------------

    def _log_start(self) -> None:
        fields = self.settings.as_log_fields()
        fields.update(
            root=self.root.path,
            filesystem_type=self.root.fs_type or "unknown",
            io_threads=self.io_threads,
            chunk_size=self.chunk_size,
            cutoff=datetime.fromtimestamp(self.policy.cutoff_ns / 1e9, UTC).isoformat(),
            pid=os.getpid(),
        )
        self.log.info("Starting purge operation", extra={"extra_fields": fields})

    def _snapshot(self) -> dict[str, object]:
        """Counts so far, for the progress record and the live display."""
        counts = total(self.walker.counters)
        if self.children is not None:
            for child in list(self.children.progress.values()):
                add_record_counts(counts, child)
        elapsed = time.monotonic() - self._started
        return {
            "files_scanned": counts.files_scanned,
            "files_to_purge": counts.files_to_purge,
            "files_purged": counts.files_purged,
            "bytes_to_purge": counts.bytes_to_purge,
            "bytes_freed": counts.bytes_freed,
            "dirs_scanned": counts.dirs_scanned,
            "empty_dirs_deleted": counts.empty_dirs_deleted,
            "errors": counts.errors,
            "elapsed_seconds": round(elapsed, 1),
            "files_per_second": round(counts.files_scanned / max(elapsed, 1e-9), 1),
            "memory_mb": round(self.guard.rss_mb(), 1) if self.guard else 0.0,
        }

    async def _ui_loop(self) -> None:
        assert self.ui is not None
        while True:
            self.ui.update(self._snapshot())
            await asyncio.sleep(0.25)

    async def _progress_loop(self, queue: WorkQueue) -> None:
        while True:
            await asyncio.sleep(self.settings.progress_interval)
            fields = self._snapshot()
            fields.update(asdict(queue.stats()))
            self.log.info("Progress", extra={"extra_fields": fields})

    def _outcome(self, duration: float) -> Outcome:
        counts = total(self.walker.counters)
        stop_reason = self.walker.stop_reason
        breakdown = merge_breakdowns([c.breakdown for c in self.walker.counters])
        peak_mb = peak_rss_mb()
        manifest_lines = self.manifest.lines if self.manifest else 0
        for child in self.children.results.values() if self.children else ():
            if child.record is None:  # it died without its final record
                self.log.error(
                    "A child process failed",
                    extra={"extra_fields": {"process": child.index, "exit_code": child.exit_code}},
                )
                stop_reason = stop_reason or "child process failed"
                continue
            add_record_counts(counts, child.record)
            breakdown = merge_report_records(breakdown, child.record)
            peak_mb += child.record.get("peak_memory_mb", 0)
            manifest_lines += child.record.get("manifest_lines", 0)
            stop_reason = stop_reason or child.record.get("stop_reason")
        report = RunReport(
            dry_run=self.settings.dry_run,
            duration_seconds=duration,
            interrupted=stop_reason is not None,
            stop_reason=stop_reason,
            memory_backpressure_events=self.guard.events if self.guard else 0,
            io_threads=self.io_threads,
            filesystem_type=self.root.fs_type or "unknown",
            extra={
                "shard_index": self.settings.shard_index,
                "shard_count": self.settings.shard_count,
                "processes": self.processes,
                **breakdown,
                **({"manifest_lines": manifest_lines} if self.manifest else {}),
            },
        )
        record = final_record(counts, report)
        # With --processes, the sum of the processes' peaks: what a pod's memory limit sees
        # at worst.
        record["peak_memory_mb"] = round(peak_mb, 1)
        code = {
            "SIGINT": EXIT_SIGINT,
            "SIGTERM": EXIT_SIGTERM,
            "internal error": EXIT_FATAL,
            "child process failed": EXIT_FATAL,
            "max_delete": EXIT_MAX_DELETE,
            "max_runtime": EXIT_MAX_RUNTIME,
        }.get(stop_reason or "", EXIT_ENTRY_ERRORS if counts.errors else EXIT_OK)
        if self.settings.metrics_file or self.settings.pushgateway:
            from efspurge import metrics  # prometheus_client costs ~25 ms to import: only if asked

            published = metrics.publish(record, self.settings, code, self.log)
            record["metrics_published"] = published
            if not published and self.settings.fail_on_push_error and code == EXIT_OK:
                code = EXIT_METRICS
        record["exit_code"] = code
        # The final record is written whatever --log-level says: it is the run's result.
        # logger.handle() applies filters but not the level threshold.
        level = logging.INFO if code == EXIT_OK else logging.WARNING
        self.log.handle(
            self.log.makeRecord(
                self.log.name,
                level,
                __file__,
                0,
                "Purge operation completed",
                (),
                None,
                extra={"extra_fields": record},
            )
        )
        return Outcome(record, code)
