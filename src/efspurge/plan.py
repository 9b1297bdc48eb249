"""The walk's configuration, derived once from the settings: one object, read-only.

Everything the loop and the threads need to decide is here: the rules a thread applies to a
listing and to files (pure functions, shared read-only across threads), the sizes of batches,
the caps, and the budgets that bound memory and descriptors.
"""

from __future__ import annotations

import mmap
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from efspurge import manifest as manifest_lines
from efspurge import mounts
from efspurge.filepurge import FileRules
from efspurge.liststep import ListRules, any_stays
from efspurge.policy import AgePolicy
from efspurge.selection import Selector
from efspurge.settings import Settings
from efspurge.shard import Shard, child_key
from efspurge.stats import age_edges

# Threads on a network filesystem when --io-threads is auto, shared out between the processes
# (never above --max-concurrency). Measured on slowfs (PERFORMANCE.md): past a few hundred,
# two cores are saturated by the GIL and the FUSE round trips, and more threads only add
# contention.
NETWORK_IO_THREADS = 256
# Processes on a network filesystem when --processes is auto (with 2 CPUs or more). Threads
# waiting on round trips all pass one GIL per process; split into a few crowds, each call costs
# far less CPU (benchmarks/gilcrowds.py on slowfs, the EFS-like tree's deleting phase: 1 x 100
# threads 1.12 s wall and 1.13 s CPU, 2 x 50 0.86 s and 0.85 s, 4 x 25 0.69 s and 0.56 s,
# 8 x 13 0.78 s and 0.61 s: PERFORMANCE.md, "GIL crowds").
NETWORK_PROCESSES = 4
# Files per batch sent to a worker process (--processes): big enough that a batch's hand-off
# costs little per file, small enough that the workers share a big directory evenly.
PROCESS_CHUNK_SIZE = 1000
# Files per batch on a network filesystem, where several threads share a big directory's files
# (its unlinks serialize on the directory's lock, its lstats do not). Measured on slowfs
# (balanced 20k): 128-file batches 0.90-1.22 s, 512-file batches 0.69-0.82 s.
NETWORK_CHUNK_SIZE = 512
# New directories listed in one thread call on a local disk: a tree of many small directories
# then costs one hand-off per few dozen directories, not one per directory.
DIRS_PER_CALL_LOCAL = 64
# A directory's first listing step reads this many entries at most: most directories are
# small, and a batch of several new directories must stay bounded.
FIRST_VISIT_ENTRIES = 512
# Under --max-ops-per-second, batches are cut to this fraction of a second's operations.
RATE_BATCHES_PER_SECOND = 20
# Listed-but-unhandled entries allowed, in listing batches: bounds memory by construction.
ENTRY_BUDGET_BATCHES = 8


class StopFlag:
    """Set on the loop; read between files by the threads and by the worker processes, which
    is why it lives in an anonymous shared mapping (inherited by fork) and not in an attribute.
    A reader that sees it a moment late finishes at most a few more files."""

    __slots__ = ("_shared",)

    def __init__(self) -> None:
        self._shared = mmap.mmap(-1, 1)

    def set(self) -> None:
        self._shared[0] = 1

    def __call__(self) -> bool:
        return self._shared[0] == 1


@dataclass(frozen=True, slots=True)
class WalkPlan:
    dry_run: bool
    remove_empty_dirs: bool
    max_delete: int
    max_empty_dirs: int
    concurrency: int  # batches in flight in threads = threads in the pool
    workers: int  # worker processes for file batches (--processes N: N - 1)
    batch_size: int
    first_visit: int
    dirs_per_call: int
    chunk_size: int
    inline_files: bool  # one thread lists and deletes (local) or threads share files (network)
    fd_budget: int
    entry_budget: int
    list_rules: ListRules
    file_rules: FileRules
    shard: Shard | None
    child_key: Callable[[int, str], int]
    young_dir_cutoff_ns: int | None
    with_rel: bool
    stop: StopFlag
    ops_per_second: float  # this process's share of --max-ops-per-second (0: no limit)
    why_kept: Callable[[os.stat_result], str]  # the age test's reason, for DEBUG records

    @property
    def inline_rules(self) -> FileRules | None:
        return self.file_rules if self.inline_files else None


def choose_io_threads(settings: Settings, fs_type: str | None, processes: int = 1) -> int:
    """Threads in each process. --max-concurrency bounds them all together: the calls in
    flight in the whole run, as in the reference."""
    if settings.io_threads is not None:
        wanted = settings.io_threads
    elif mounts.is_local(fs_type):
        # Local metadata calls take microseconds: more threads only contend for the GIL
        # (measured: 2 threads are 2x slower than 1 on tmpfs).
        wanted = 1
    else:
        wanted = NETWORK_IO_THREADS // processes
    return max(1, min(wanted, settings.max_concurrency // processes))


def choose_processes(settings: Settings, fs_type: str | None) -> int:
    """Processes sharing the work: 'auto' is 2 on a local filesystem with 2 or more CPUs (the
    work is CPU-bound there), NETWORK_PROCESSES on a network one (each a crowd of threads
    waiting on round trips), and 1 with a single CPU."""
    if settings.processes is not None:
        return settings.processes
    if available_cpus() < 2:
        return 1
    return 2 if mounts.is_local(fs_type) else NETWORK_PROCESSES


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


def _chunk_size(batch: int, threads: int, workers: int) -> int:
    if threads > 1:
        return min(batch, NETWORK_CHUNK_SIZE)
    return min(batch, PROCESS_CHUNK_SIZE) if workers else batch


def fd_budget(limit: int) -> int:
    """Directory descriptors the walk may hold: half the limit, leaving room for the log,
    the manifest, the thread pool and the libraries; at least 8 (a limit of 64 gives 16)."""
    return max(8, limit // 2 - 16)


def build_plan(
    settings: Settings,
    root_path: str,
    root_st: os.stat_result,
    fs_type: str | None,
    now_ns: int,
    protected: frozenset[tuple[int, int]] = frozenset(),
    with_manifest: bool = False,
    debug: bool = False,
    fd_limit: int | None = None,
    root_mount: int | None = None,
) -> WalkPlan:
    policy = AgePolicy.from_days(settings.max_age_days, now_ns=now_ns, age_by=settings.age_by)
    processes = choose_processes(settings, fs_type)
    threads = choose_io_threads(settings, fs_type, processes)
    workers = processes - 1
    ops = settings.max_ops_per_second / settings.shard_count
    sizes = _batch_sizes(settings.task_batch_size, threads, workers, ops)
    shard = Shard(settings.shard_index, settings.shard_count) if settings.shard_count > 1 else None
    selector = Selector(settings.include, settings.exclude, settings.exclude_dir)
    mount_rel = frozenset(
        os.path.relpath(p, root_path) for p in mounts.mount_points_below(root_path)
    )
    stop = StopFlag()
    list_rules = _list_rules(
        settings, root_st, policy, selector, shard, mount_rel, root_mount, debug
    )
    file_rules = _file_rules(settings, policy, now_ns, protected, with_manifest, debug, stop)
    file_rules.stop_check_mask = 0 if threads > 1 else 63  # see FileRules
    young = settings.keep_empty_dirs_newer_than
    limit = fd_limit if fd_limit is not None else raise_fd_limit()
    return WalkPlan(
        dry_run=settings.dry_run,
        remove_empty_dirs=settings.remove_empty_dirs,
        max_delete=settings.max_delete,
        max_empty_dirs=settings.max_empty_dirs_to_delete,
        concurrency=threads,
        workers=workers,
        **sizes,
        fd_budget=fd_budget(limit),
        list_rules=list_rules,
        file_rules=file_rules,
        shard=shard,
        child_key=child_key if shard else (lambda key, name: 0),
        young_dir_cutoff_ns=now_ns - round(young * 1e9) if young > 0 else None,
        with_rel=with_manifest or selector.needs_path or bool(mount_rel),
        stop=stop,
        ops_per_second=ops,
        why_kept=policy.why_kept,
    )


def _batch_sizes(task_batch_size: int, threads: int, workers: int, ops: float) -> dict[str, Any]:
    """The plan's batch sizes, from --task-batch-size, the threads, the worker processes and
    this process's share of --max-ops-per-second (0: no limit)."""
    batch = task_batch_size
    if ops:
        # Small batches under a rate limit: each draws its tokens before it runs, so a batch
        # is at most a twentieth of a second's operations and the traffic stays smooth.
        batch = max(1, min(batch, int(ops / RATE_BATCHES_PER_SECOND)))
    return {
        "batch_size": batch,
        "first_visit": min(batch, FIRST_VISIT_ENTRIES),
        "dirs_per_call": DIRS_PER_CALL_LOCAL if threads == 1 and not ops else 1,
        "chunk_size": _chunk_size(batch, threads, workers),
        "inline_files": threads == 1 and workers == 0,
        "entry_budget": batch * ENTRY_BUDGET_BATCHES,
    }


def _list_rules(
    settings: Settings,
    root_st: os.stat_result,
    policy: AgePolicy,
    selector: Selector,
    shard: Shard | None,
    mount_rel: frozenset[str],
    root_mount: int | None,
    debug: bool,
) -> ListRules:
    """What a thread needs to sort a listing: the filesystem rail, the filters, the shard."""

    def theirs_stay(dir_fd: int, names: list[str]) -> bool:
        return any_stays(dir_fd, names, policy.is_expired)

    return ListRules(
        same_dev=root_st.st_dev if settings.one_file_system else None,
        noatime=settings.reads_atime,
        mount_points=mount_rel if settings.one_file_system else frozenset(),
        root_mount=root_mount,
        file_filter=selector.file_selected if selector.filters_files else None,
        dir_filter=selector.dir_excluded if selector.filters_dirs else None,
        exclude_names=selector.exclude_names if selector.excludes_files else None,
        owner_filter=shard.owns_file if shard else None,
        theirs_stay=theirs_stay
        if shard and settings.dry_run and settings.remove_empty_dirs
        else None,
        debug=debug,
    )


def _file_rules(
    settings: Settings,
    policy: AgePolicy,
    now_ns: int,
    protected: frozenset[tuple[int, int]],
    with_manifest: bool,
    debug: bool,
    stop: StopFlag,
) -> FileRules:
    """What a thread needs to decide on files: the age test, the report, the manifest line."""
    action = manifest_lines.WOULD_DELETE if settings.dry_run else manifest_lines.DELETE

    def line_of(rel: str, st: os.stat_result) -> str:
        return manifest_lines.file_line(action, rel, st.st_size, st.st_mtime_ns)

    return FileRules(
        is_expired=policy.is_expired,
        timestamp=policy.timestamp,
        age_edges=age_edges(now_ns),
        dry_run=settings.dry_run,
        protected=protected,
        write_manifest=line_of if with_manifest else None,
        debug=debug,
        stopped=stop,
    )
