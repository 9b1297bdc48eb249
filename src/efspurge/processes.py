"""Several local processes as one run (--processes N).

One CPython process cannot use a second core for this work (threads only trade the GIL back
and forth), and on a local disk the work is CPU-bound. So a run can be split into N shard
processes: the parent walks shard 0 itself and starts N-1 children for the others. Each
child is a complete efspurge run with the same settings, except:

* its shard (with --shard-count S --shard-index I, process p handles shard I*N+p of S*N);
* its share of --max-delete and --max-empty-dirs-to-delete, split exactly, so the run's
  total never exceeds the cap;
* JSON lines on its stdout, read by the parent: warnings are logged again with the child's
  number, progress is added to the parent's, the final record is merged into the parent's;
* no metrics (the parent publishes for the whole run) and the manifest opened in append mode.

Children run in their own session, so a terminal's Ctrl-C reaches only the parent, which
passes SIGINT/SIGTERM on exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, replace

from efspurge.settings import Settings, settings_to_json

CHILD_ENV = "EFSPURGE_INTERNAL_CHILD"  # not a user setting: the parent sets it for children
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


class ChildProcesses:
    def __init__(self, settings: Settings, count: int, log: logging.Logger, progress: bool):
        self.settings = settings
        self.count = count
        self.log = log
        self.progress_wanted = progress
        self.results = {i: ChildResult(i) for i in range(1, count)}
        self.progress: dict[int, dict] = {}
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._readers: list[asyncio.Task] = []

    async def start(self) -> None:
        for index in range(1, self.count):
            settings = child_settings(self.settings, index, self.count, self.progress_wanted)
            env = {**os.environ, CHILD_ENV: settings_to_json(settings)}
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "efspurge",
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a terminal's ^C goes to the parent only
                limit=1 << 20,
            )
            self._procs[index] = proc
            self._readers.append(asyncio.create_task(self._read_stdout(index, proc)))
            self._readers.append(asyncio.create_task(self._read_stderr(index, proc)))

    def send_signal(self, signum: int) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):  # it just ended
                    proc.send_signal(signum)

    async def wait(self) -> list[ChildResult]:
        for index, proc in self._procs.items():
            self.results[index].exit_code = await proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        return list(self.results.values())

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    # --- what the children say --------------------------------------------------------------

    async def _read_stdout(self, index: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self._handle(index, line)

    async def _read_stderr(self, index: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            text = raw.decode("utf-8", "replace").rstrip()
            if text:
                self.log.error(
                    "Child process wrote to stderr",
                    extra={"extra_fields": {"process": index, "text": text}},
                )

    def _handle(self, index: int, line: str) -> None:
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
