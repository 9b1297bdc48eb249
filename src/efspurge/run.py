"""One run: the walk and everything around it.

:class:`Run` forks the worker processes, gives the loop its default executor (a thread pool
of the plan's size), installs the SIGINT/SIGTERM handlers, starts the memory guard, the
runtime limit and the progress records, writes the start and the final record, and then
publishes the metrics within one deadline. :class:`efspurge.purger.AsyncPurger` builds a Run
and returns its :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from efspurge import __version__, fsops, signals
from efspurge.events import EventLog
from efspurge.memory import MemoryGuard, current_rss_mb
from efspurge.plan import WalkPlan, build_plan
from efspurge.roots import RootInfo, own_files
from efspurge.settings import Settings
from efspurge.stats import (
    Counters,
    ExitCode,
    RunReport,
    StopReason,
    exit_code_of,
    final_record,
)
from efspurge.tree import DirNode
from efspurge.walker import Walker
from efspurge.workers import WorkerPool

METRICS_DEADLINE_SECONDS = 15.0  # the whole publication (textfile and push) at most


@dataclass(slots=True)
class Outcome:
    record: dict[str, object]
    exit_code: int


def _in_daemon_thread(func: Callable[..., Any], *args: Any) -> asyncio.Future:
    """Run ``func`` in a daemon thread: unlike a pool's thread, one that hangs (a server that
    never answers) cannot keep the process from exiting once its deadline has passed."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def target() -> None:
        try:
            result: Any = func(*args)
        except BaseException as exc:  # delivered to the awaiting side
            result, error = None, exc
        else:
            error = None
        # The awaiting side may be gone, its loop closed (a caller that cancelled purge()):
        # then nobody wants the result.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, future, result, error)

    threading.Thread(target=target, name="efspurge-metrics", daemon=True).start()
    return future


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class Run:
    """One run: the walk and everything around it (guard, signals, progress, records)."""

    def __init__(self, settings: Settings, root: RootInfo, logger, manifest, ui, relay) -> None:
        self.relay = relay
        self.settings = settings
        self.root = root
        self.log = logger
        self.manifest = manifest
        self.ui = ui
        self.now_ns = time.time_ns()
        self.plan: WalkPlan = build_plan(
            settings,
            root.path,
            root.st,
            root.fs_type,
            self.now_ns,
            protected=own_files(settings, manifest),
            with_manifest=manifest is not None,
            debug=logger.isEnabledFor(logging.DEBUG),
            root_mount=fsops.mount_id(root.fd),
        )
        self.counts = Counters()
        self.events = EventLog(logger, root.path, settings.dry_run, manifest)
        self.events.why_kept = self.plan.why_kept
        root_node = DirNode("", None, rel="" if self.plan.with_rel else None)
        root_node.fd, root_node.st = root.fd, root.st
        self.root_node = root_node
        self.guard: MemoryGuard | None = None
        self._signals = 0
        self._loop_signals: signals.LoopHandlers | None = None
        self._started = time.monotonic()
        self.outcome: Outcome | None = None  # set once the final record is written

    async def execute(self) -> Outcome:
        # Worker processes are forked first: before any thread exists, before the signal
        # handlers (a worker must not inherit them).
        self.pool = (
            WorkerPool(
                self.plan.workers, self.plan.file_rules, self.plan.concurrency, self.plan.fd_budget
            )
            if self.plan.workers
            else None
        )
        self.walker = Walker(self.plan, self.root_node, self.counts, self.events, self.pool)
        self.walker.on_stop = self._on_stop
        self._watchdog: asyncio.Task | None = None
        try:
            return await self._execute()
        finally:
            if self.pool is not None:
                self.pool.close()

    async def _execute(self) -> Outcome:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(self.plan.concurrency, thread_name_prefix="efspurge-io")
        # The batches run in the loop's default executor (aiofiles.os.wrap's way); in a
        # caller's loop (the Python API) its own default executor is put back afterwards.
        previous = getattr(loop, "_default_executor", None)
        loop.set_default_executor(executor)
        self._install_signal_handlers(loop)
        try:
            self._log_start()
            self._take_early_signal()
            if self.relay is not None:
                self.relay.attach(loop, self.walker.request_stop)
            background = self._start_background()
            cancelled: asyncio.CancelledError | None = None
            try:
                await self.walker.run()
            except asyncio.CancelledError as exc:
                cancelled = exc  # the walk stopped and applied what it did: record it first
            finally:
                for task in [*background, self._watchdog]:
                    if task is not None:
                        task.cancel()
                try:
                    await asyncio.gather(*background, return_exceptions=True)
                except asyncio.CancelledError as exc:
                    cancelled = cancelled or exc  # cancelled (again) now: the cleanup goes on
                executor.shutdown(wait=True)
                loop._default_executor = previous  # type: ignore[attr-defined]
                if self.pool is not None:
                    self.pool.close()  # before the final record: it reports their memory
                if self.manifest is not None:
                    self.manifest.close()
                if self.ui is not None:
                    self.ui.stop()
            self.outcome = outcome = self._finish(time.monotonic() - self._started)
            if cancelled is None:
                await self._publish_metrics(outcome)
                return outcome
            # Cancelled: the final record is written; the metrics are published too (else
            # they would say "in progress" until the next run), unless cancelled again.
            with contextlib.suppress(asyncio.CancelledError):
                await self._publish_metrics(outcome)
            raise cancelled
        finally:
            if self.relay is not None:
                self.relay.detach()
            self._remove_signal_handlers()

    def _on_stop(self, reason: StopReason) -> None:
        """A stop was asked for: a worker process that does not answer soon is killed, so
        that the run ends with its record (WorkerPool.kill_when_stuck)."""
        if self.pool is not None and self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self.pool.kill_when_stuck(self.log)
            )

    def _start_background(self) -> list[asyncio.Task]:
        tasks = []
        settings = self.settings
        if settings.memory_limit_mb > 0:
            self.guard = MemoryGuard(settings.memory_limit_mb, self.walker.set_paused, self.log)
            tasks.append(asyncio.create_task(self.guard.run()))
        if settings.max_runtime > 0:
            tasks.append(asyncio.create_task(self._runtime_limit()))
        if settings.progress_interval > 0:
            tasks.append(
                asyncio.create_task(self._every(settings.progress_interval, self._progress))
            )
        if self.ui is not None:
            self.ui.start()
            tasks.append(asyncio.create_task(self._every(0.25, self._ui_update)))
        return tasks

    async def _runtime_limit(self) -> None:
        await asyncio.sleep(self.settings.max_runtime)
        self.log.warning(
            "Maximum runtime reached: finishing in-flight operations, then stopping",
            extra={"extra_fields": {"max_runtime_seconds": self.settings.max_runtime}},
        )
        self.walker.request_stop(StopReason.MAX_RUNTIME)

    @staticmethod
    async def _every(interval: float, action: Callable[[], Awaitable[None] | None]) -> None:
        while True:
            await asyncio.sleep(interval)
            action()

    # --- signals --------------------------------------------------------------------------

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        # Only the main thread receives signals (and only it may set their handlers): a run
        # started from another thread (the Python API in a worker thread of the caller's) is
        # stopped by --max-runtime or by its caller, not by signals.
        if threading.current_thread() is threading.main_thread():
            self._loop_signals = signals.LoopHandlers(loop, self._on_signal)

    def _remove_signal_handlers(self) -> None:
        if self._loop_signals is not None:
            self._loop_signals.remove()
            self._loop_signals = None

    def _take_early_signal(self) -> None:
        """A signal that arrived before the loop's handlers existed (see efspurge.signals)."""
        signum = signals.early_signal()
        if signum is not None:
            self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        self._signals += 1
        if self._signals > 1:
            # A second signal: the user insists. Every system call is atomic, so exiting now
            # leaves nothing half-deleted; only the final record is lost.
            self.log.warning(f"Second {name}: exiting at once", extra={"extra_fields": {}})
            os._exit(128 + signum)
        self.log.warning(
            f"Received {name}: finishing in-flight operations, then stopping",
            extra={"extra_fields": {"signal": name}},
        )
        self.walker.request_stop(StopReason[name])

    # --- records --------------------------------------------------------------------------

    def _log_start(self) -> None:
        fields_ = self.settings.as_log_fields()
        fields_.update(
            version=__version__,
            root=self.root.path,
            filesystem_type=self.root.fs_type or "unknown",
            io_threads=self.plan.concurrency,
            processes=self.plan.workers + 1,
            max_ops_per_second_effective=self.plan.ops_per_second,
            max_in_flight=self.walker.max_in_flight,
            cutoff=datetime.fromtimestamp(
                (self.now_ns - round(self.settings.max_age_days * 86400e9)) / 1e9, UTC
            ).isoformat()
            if self.settings.max_age_days < 100_000
            else None,
            pid=os.getpid(),
        )
        self.log.info("Starting purge operation", extra={"extra_fields": fields_})
        for option, needed in self.settings.without_effect():
            self.log.warning(
                f"{option} has no effect without {needed}",
                extra={"extra_fields": {"option": option, "needs": needed}},
            )

    def snapshot(self) -> dict[str, object]:
        """Counts so far, for the progress record and the live display."""
        c = self.counts
        elapsed = time.monotonic() - self._started
        return {
            "files_scanned": c.files_scanned,
            "files_to_purge": c.files_to_purge,
            "files_purged": c.files_purged,
            "bytes_to_purge": c.bytes_to_purge,
            "bytes_freed": c.bytes_freed,
            "dirs_scanned": c.dirs_scanned,
            "empty_dirs_deleted": c.empty_dirs_deleted,
            "errors": c.errors,
            "elapsed_seconds": round(elapsed, 1),
            "files_per_second": round(c.files_scanned / max(elapsed, 1e-9), 1),
            "memory_mb": round(self.guard.rss_mb() if self.guard else current_rss_mb(), 1),
            **self.walker.rate.statistics(),
        }

    def _progress(self) -> None:
        snapshot = self.snapshot()
        if self.settings.metrics_file or self.settings.pushgateway:
            from efspurge import metrics

            metrics.publish_progress(snapshot, self.settings)  # returns at once, never raises
        self.log.info("Progress", extra={"extra_fields": {**snapshot, **self.walker.statistics()}})

    def _ui_update(self) -> None:
        self.ui.update(self.snapshot())

    def _finish(self, duration: float) -> Outcome:
        stop = self.walker.stop_reason
        report = RunReport(
            dry_run=self.settings.dry_run,
            duration_seconds=duration,
            stop_reason=stop,
            memory_backpressure_events=self.guard.events if self.guard else 0,
            io_threads=self.plan.concurrency,
            filesystem_type=self.root.fs_type or "unknown",
            extra={
                "shard_index": self.settings.shard_index,
                "shard_count": self.settings.shard_count,
                "processes": self.plan.workers + 1,
                **self.walker.rate.statistics(),
                **({"manifest_lines": self.manifest.lines} if self.manifest else {}),
            },
        )
        record = final_record(self.counts, report)
        if self.pool is not None:
            # What a pod's memory limit sees: the parent's peak and the workers' own memory.
            record["peak_memory_mb"] = round(record["peak_memory_mb"] + self.pool.memory_mb(), 1)
        code = exit_code_of(stop, self.counts.errors)
        if self.events.had_internal_error:
            # Also after another stop (a worker killed for not answering after --max-runtime):
            # the counts and the manifest may be short, which exit 5 or 143 would not say.
            code = int(ExitCode.FATAL)
        record["exit_code"] = code
        # The final record is written whatever --log-level says: it is the run's result.
        # logger.handle() applies filters but not the level threshold. Always at INFO, as
        # in the reference (a filter on INFO and this message must see every run); the
        # outcome is exit_code, and the errors have WARNING records of their own.
        self.log.handle(
            self.log.makeRecord(
                self.log.name,
                logging.INFO,
                __file__,
                0,
                "Purge operation completed",
                (),
                None,
                extra={"extra_fields": record},
            )
        )
        if self.ui is not None:
            self.ui.summary(record)
        return Outcome(record, code)

    async def _publish_metrics(self, outcome: Outcome) -> None:
        """After the final record: publish within one deadline; a signal abandons it."""
        settings = self.settings
        if not (settings.metrics_file or settings.pushgateway):
            return
        from efspurge import metrics  # prometheus_client costs ~25 ms to import: only if asked

        work = _in_daemon_thread(
            metrics.publish, outcome.record, settings, outcome.exit_code, self.log
        )
        stop = asyncio.create_task(self._wait_for_signal())
        done, _ = await asyncio.wait(
            {work, stop}, timeout=METRICS_DEADLINE_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        stop.cancel()
        published = work in done and work.result() is True
        if published:
            self.log.info("Metrics published", extra={"extra_fields": {}})
        else:
            reason = "interrupted by a signal" if stop in done else "deadline passed"
            if work in done:
                reason = "failed"
            fields_: dict[str, Any] = {"reason": reason}
            if reason == "deadline passed":  # the whole publication's deadline, not the push's
                fields_["deadline_seconds"] = METRICS_DEADLINE_SECONDS
            self.log.warning("Metrics not published", extra={"extra_fields": fields_})
        if stop in done and self.walker.stop_reason is not None:
            outcome.exit_code = self.walker.stop_reason.exit_code
        elif not published and settings.fail_on_push_error and outcome.exit_code == ExitCode.OK:
            outcome.exit_code = ExitCode.METRICS

    async def _wait_for_signal(self) -> None:
        before = self._signals
        while self._signals == before:
            await asyncio.sleep(0.05)
