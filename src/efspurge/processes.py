"""Several local processes as one run (--processes N).

One CPython process cannot use a second core for this work (threads only trade the GIL back
and forth), and on a local disk the work is CPU-bound. So a run can be split into N shard
processes: the parent walks shard 0 itself and starts N-1 children for the others. Each
child is a complete efspurge run with the same settings, except:

* its shard (with --shard-count S --shard-index I, process p handles shard I*N+p of S*N);
* its share of --max-delete, --max-empty-dirs-to-delete, --max-concurrency, --memory-limit-mb
  (and of an explicit --io-threads), split exactly, so the run's total stays within what was
  asked;
* JSON lines on its stdout, read by the parent: warnings are logged again with the child's
  number, progress is added to the parent's, the final record is merged into the parent's;
* no metrics (the parent publishes for the whole run) and the manifest opened in append mode.

Children are forked before any thread or event loop exists (no second interpreter start-up),
reopen the root themselves (a shared descriptor would share its directory offset), and run in
their own session, so a terminal's Ctrl-C reaches only the parent, which passes SIGINT/SIGTERM
on exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from efspurge.settings import Settings

CHILD_PROGRESS_INTERVAL = 0.5


def share(total: int, index: int, count: int) -> int:
    """Process `index`'s part of a cap of `total` (0 = no cap), the parts adding up exactly."""
    if total == 0:
        return 0
    return total // count + (1 if index < total % count else 0)


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, lowered by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cpus


def process_settings(settings: Settings, index: int, count: int) -> Settings:
    """The settings of process `index` of `count` (0 is the parent itself)."""
    return replace(
        settings,
        shard_index=settings.shard_index * count + index,
        shard_count=settings.shard_count * count,
        max_delete=share(settings.max_delete, index, count),
        max_empty_dirs_to_delete=share(settings.max_empty_dirs_to_delete, index, count),
        # The ceilings on operations in flight and on memory are for the whole run (a pod's
        # limit is sized against them), not for each process.
        max_concurrency=max(1, share(settings.max_concurrency, index, count)),
        memory_limit_mb=max(1, share(settings.memory_limit_mb, index, count)),
        io_threads=None
        if settings.io_threads is None
        else max(1, share(settings.io_threads, index, count)),
        processes=1,
    )


def child_settings(settings: Settings, index: int, count: int, progress: bool) -> Settings:
    return replace(
        process_settings(settings, index, count),
        log_format="json",
        metrics_file=None,
        pushgateway=None,
        fail_on_push_error=False,
        progress_interval=CHILD_PROGRESS_INTERVAL if progress else 0.0,
    )


@dataclass
class ChildResult:
    index: int
    exit_code: int | None = None
    record: dict | None = None  # its final record; None if it died without one


_LEVELS = {name: getattr(logging, name) for name in ("DEBUG", "INFO", "WARNING", "ERROR")}


def fork_children(
    settings: Settings, count: int, progress: bool, run_child: Callable[[Settings], int]
) -> ChildProcesses:
    """Fork processes 1..count-1; in each child, run_child(its settings) and exit.

    Called before any thread or event loop exists: a fork copies the already imported
    interpreter, so a child starts working at once (an exec would pay ~80 ms of start-up).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    children = ChildProcesses(count)
    for index in range(1, count):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 3
            try:
                os.close(read_fd)
                for other in children.pipes.values():
                    os.close(other)
                os.dup2(write_fd, 1)  # its JSON lines go to the parent
                os.close(write_fd)
                os.setsid()  # a terminal's ^C goes to the parent only, which passes it on
                code = run_child(child_settings(settings, index, count, progress))
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(write_fd)
        children.pids[index] = pid
        children.pipes[index] = read_fd
    return children


class ChildProcesses:
    """The parent's view of its forked children: their output, signals, exit codes."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.pids: dict[int, int] = {}
        self.pipes: dict[int, int] = {}
        self.results = {i: ChildResult(i) for i in range(1, count)}
        self.progress: dict[int, dict] = {}
        self.log: logging.Logger | None = None
        self._readers: list[asyncio.Task] = []
        self._waiter = ThreadPoolExecutor(max(1, count - 1), thread_name_prefix="efspurge-wait")

    async def attach(self, log: logging.Logger) -> None:
        """Start reading the children's records (inside the parent's event loop)."""
        self.log = log
        loop = asyncio.get_running_loop()
        for index, fd in self.pipes.items():
            reader = asyncio.StreamReader(limit=1 << 20)
            await loop.connect_read_pipe(
                lambda r=reader: asyncio.StreamReaderProtocol(r), os.fdopen(fd, "rb")
            )
            self._readers.append(asyncio.create_task(self._read(index, reader)))

    def send_signal(self, signum: int) -> None:
        for index, pid in self.pids.items():
            if self.results[index].exit_code is None:
                with contextlib.suppress(ProcessLookupError):  # it just ended
                    os.kill(pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> list[ChildResult]:
        loop = asyncio.get_running_loop()
        for index, pid in self.pids.items():
            _, status = await loop.run_in_executor(self._waiter, os.waitpid, pid, 0)
            self.results[index].exit_code = os.waitstatus_to_exitcode(status)
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._waiter.shutdown(wait=False)
        return list(self.results.values())

    # --- what the children say --------------------------------------------------------------

    async def _read(self, index: int, reader: asyncio.StreamReader) -> None:
        async for raw in reader:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self._handle(index, line)

    def _handle(self, index: int, line: str) -> None:
        assert self.log is not None
        try:
            record = json.loads(line)
            message = record["message"]
            fields = record.get("extra_fields", {})
        except (ValueError, KeyError, TypeError):
            self.log.warning(
                "Unexpected output from a child process",
                extra={"extra_fields": {"process": index, "text": line[:1000]}},
            )
            return
        if message == "Purge operation completed":
            self.results[index].record = fields
        elif message == "Progress":
            self.progress[index] = fields
        elif message != "Starting purge operation":  # the parent's start record says it all
            level = _LEVELS.get(record.get("level", "INFO"), logging.INFO)
            self.log.log(level, message, extra={"extra_fields": {**fields, "process": index}})
