"""AsyncPurger: the public API, and StopRelay, through which its caller stops a run from
another thread.

``AsyncPurger`` is what the CLI builds, and what a Python caller (an Airflow task, a script)
uses directly::

    purger = AsyncPurger("/mnt/efs/tmp", max_age_days=7, dry_run=False)
    stats = await purger.purge()

It takes the reference interface's keywords with their defaults (``dry_run=True``: a script
moved over from the reference must not start deleting) and every other option of the command
line as a keyword. The run (:mod:`efspurge.run`) gives the loop a thread pool sized from
``--max-concurrency`` (and the filesystem) as its default executor;
:class:`efspurge.walker.Walker` keeps as many batches in flight, plus two per worker process
(``--processes``), under a semaphore of that size.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from efspurge import fsops
from efspurge.jsonlog import setup_logging
from efspurge.manifest import Manifest
from efspurge.roots import RootInfo, check_metrics_file, open_manifest, prepare_root
from efspurge.run import Outcome, Run
from efspurge.settings import Settings
from efspurge.stats import StopReason


class StopRelay:
    """A stop request from outside the loop (the log handler finding stdout closed, in
    whichever thread was logging): passed on to the running walk, or kept for its start."""

    def __init__(self) -> None:
        self.pending: StopReason | None = None
        self._target: tuple[asyncio.AbstractEventLoop, Callable[[StopReason], None]] | None = None

    def __call__(self, reason: StopReason = StopReason.STDOUT_CLOSED) -> None:
        if self._target is None:
            self.pending = self.pending or reason
            return
        loop, stop = self._target
        loop.call_soon_threadsafe(stop, reason)

    def attach(self, loop: asyncio.AbstractEventLoop, stop: Callable[[StopReason], None]) -> None:
        self._target = (loop, stop)
        if self.pending is not None:
            stop(self.pending)

    def detach(self) -> None:
        self._target = None


# Event loops with a run in progress: one at a time per loop (AsyncPurger.run).
_LOOPS_RUNNING: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()

# Every option of the command line; the root is root_path, never a `path=` keyword.
_SETTING_NAMES = frozenset(f.name for f in fields(Settings)) - {"path"}


class AsyncPurger:
    """Purge one tree. Keywords: those of the reference interface, then every CLI option."""

    def __init__(
        self,
        root_path: str,
        max_age_days: float = 30.0,
        max_concurrency: int = 1000,
        dry_run: bool = True,
        log_level: str = "INFO",
        memory_limit_mb: int = 800,
        task_batch_size: int = 5000,
        remove_empty_dirs: bool = False,
        max_empty_dirs_to_delete: int = 500,
        **options: Any,
    ) -> None:
        # One process unless asked: a library forks no workers into its caller's process
        # (which may have threads of its own) on its own initiative.
        options.setdefault("processes", 1)
        unknown = set(options) - _SETTING_NAMES
        if unknown:
            raise TypeError(f"AsyncPurger: unknown option(s) {', '.join(sorted(unknown))}")
        from efspurge.resolve import resolve_keywords  # the same checks as the CLI's

        self.settings = resolve_keywords(
            root_path,
            {
                "max_age_days": max_age_days,
                "max_concurrency": max_concurrency,
                "dry_run": dry_run,
                "log_level": log_level,
                "memory_limit_mb": memory_limit_mb,
                "task_batch_size": task_batch_size,
                "remove_empty_dirs": remove_empty_dirs,
                "max_empty_dirs_to_delete": max_empty_dirs_to_delete,
                **options,
            },
        )
        self.stats: dict[str, object] | None = None
        self.exit_code: int | None = None
        self._root: RootInfo | None = None
        self._logger: logging.Logger | None = None
        self._manifest: Manifest | None = None
        self._ui = None
        self._relay: StopRelay | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        root: RootInfo | None = None,
        logger: logging.Logger | None = None,
        manifest: Manifest | None = None,
        ui: Any = None,
        relay: StopRelay | None = None,
    ) -> AsyncPurger:
        """The CLI's way in: settings already resolved and checked."""
        purger = cls.__new__(cls)
        purger._relay = relay
        purger.settings = settings
        purger.stats = None
        purger.exit_code = None
        purger._root, purger._logger, purger._manifest, purger._ui = root, logger, manifest, ui
        return purger

    async def purge(self) -> dict[str, object]:
        """Run, and return the final stats (also left on ``self.stats``)."""
        return (await self.run()).record

    async def run(self) -> Outcome:
        loop = asyncio.get_running_loop()
        if loop in _LOOPS_RUNNING:
            # A run owns its loop's default executor and stop-signal handlers until it ends:
            # two at once undid each other's (a SIGTERM then killed the second run without its
            # final record or its last manifest lines; found by review).
            raise RuntimeError(
                "purge(): another purge is running in this event loop; await them one after "
                "the other, or give each its own loop (asyncio.run in a thread of its own)"
            )
        _LOOPS_RUNNING.add(loop)
        try:
            return await self._run()
        finally:
            _LOOPS_RUNNING.discard(loop)

    async def _run(self) -> Outcome:
        settings = self.settings
        if self._root is None:
            check_metrics_file(settings, "metrics_file")  # the CLI checked it already
        relay = self._relay or StopRelay()
        # A log that cannot be written stops the run, as on the command line.
        logger = self._logger or setup_logging(
            settings.log_level,
            on_output_lost=lambda closed: relay(
                StopReason.STDOUT_CLOSED if closed else StopReason.OUTPUT_FAILED
            ),
        )
        root = self._root or prepare_root(settings.path, settings.reads_atime, "root_path")
        manifest = self._manifest
        if manifest is None:
            manifest = open_manifest(settings, "manifest")
        run = None
        try:
            run = Run(settings, root, logger, manifest, self._ui, relay)
            outcome = await run.execute()
        finally:
            if self._root is None:
                fsops.close(root.fd)
            if run is not None and run.outcome is not None:
                # Also when the caller cancelled purge(): the run stopped, and what it did
                # is on self.stats (stop_reason "cancelled") before the cancellation goes on.
                self.stats, self.exit_code = run.outcome.record, run.outcome.exit_code
        return outcome


# The reference package's name for the class (efspurge.purger.AsyncEFSPurger): a script
# written for it imports it unchanged.
AsyncEFSPurger = AsyncPurger
