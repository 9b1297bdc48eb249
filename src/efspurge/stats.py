"""Counters, stop reasons, exit codes and the final record.

The counters live on the event loop and only the loop changes them (threads return their
counts as data), so they need no lock and a snapshot is always consistent.
"""

from __future__ import annotations

import enum
import resource
import sys
from dataclasses import dataclass, field, fields

MIB = 1024 * 1024
NS_PER_DAY = 86_400 * 1_000_000_000

# The selected files' age, in days, by the --age-by timestamp: bucket edges and labels, oldest
# first (the order of bisect on ascending timestamps).
AGE_EDGES_DAYS = (365, 180, 90, 60, 30)
AGE_LABELS = (">365d", "180-365d", "90-180d", "60-90d", "30-60d", "<30d")
TOP_LEVEL_TRACKED = 1000  # distinct top-level names tracked per thread; beyond: "(other)"
TOP_LEVEL_REPORTED = 20  # the largest ones in the final record
OTHER = "(other)"


class Breakdown:
    """What was selected for deletion, by top-level directory and by age."""

    __slots__ = ("by_age", "by_top")

    def __init__(self) -> None:
        self.by_top: dict[str, list[int]] = {}
        self.by_age: list[list[int]] = [[0, 0] for _ in AGE_LABELS]

    def top(self, name: str) -> list[int]:
        """The [files, bytes] cell of a top-level directory ("." for files in the root)."""
        cell = self.by_top.get(name)
        if cell is None:
            if len(self.by_top) >= TOP_LEVEL_TRACKED:
                name = OTHER  # bounded memory, whatever the tree
            cell = self.by_top.setdefault(name, [0, 0])
        return cell

    def add(self, top: str, files: int, size: int, by_age: dict[int, list[int]]) -> None:
        """A batch's selected files: ``by_age`` maps a bucket index to [files, bytes]."""
        if not files:
            return
        cell = self.top(top)
        cell[0] += files
        cell[1] += size
        for index, (n, b) in by_age.items():
            self.by_age[index][0] += n
            self.by_age[index][1] += b


def age_edges(now_ns: int) -> list[int]:
    """Ascending timestamps for bisect: index i is the bucket AGE_LABELS[i]."""
    return [now_ns - days * NS_PER_DAY for days in AGE_EDGES_DAYS]


def breakdown_tables(part: Breakdown) -> dict[str, dict[str, dict[str, int]]]:
    """The report's two tables: the largest top-level directories, and the age buckets."""
    tops, ages = part.by_top, part.by_age
    ranked = sorted(((k, v) for k, v in tops.items() if k != OTHER), key=lambda kv: -kv[1][1])
    shown = dict(ranked[:TOP_LEVEL_REPORTED])
    rest = ranked[TOP_LEVEL_REPORTED:] + ([(OTHER, tops[OTHER])] if OTHER in tops else [])
    if rest:
        shown[OTHER] = [sum(v[0] for _, v in rest), sum(v[1] for _, v in rest)]
    return {
        "by_top_level_dir": {k: {"files": v[0], "bytes": v[1]} for k, v in shown.items()},
        "by_age": {
            label: {"files": f, "bytes": b}
            for label, (f, b) in zip(AGE_LABELS, ages, strict=True)
            if f
        },
    }


@dataclass(slots=True)
class Counters:
    files_scanned: int = 0  # regular files whose age was checked
    files_to_purge: int = 0  # expired files selected for deletion (dry run and real run alike)
    files_purged: int = 0  # files actually unlinked (0 in a dry run)
    bytes_to_purge: int = 0
    bytes_freed: int = 0  # st_size of the files actually unlinked
    dirs_scanned: int = 0  # directories opened and listed, the root included
    empty_dirs_to_delete: int = 0  # directories selected for removal (dry run and real run)
    empty_dirs_deleted: int = 0  # directories actually removed (0 in a dry run)
    symlinks_skipped: int = 0
    special_files_skipped: int = 0  # fifos, sockets, devices
    dirs_skipped_changed: int = 0  # swapped or replaced between listing and opening
    entries_vanished: int = 0  # removed by someone else between listing and our call
    mount_points_skipped: int = 0  # directories on another filesystem, not entered
    files_excluded: int = 0  # regular files left alone by --include/--exclude
    dirs_excluded: int = 0  # directories not listed because of --exclude-dir
    young_dirs_kept: int = 0  # empty directories kept because they were recently modified
    files_other_shards: int = 0  # regular files left to the other shards (--shard-count)
    errors: int = 0
    breakdown: Breakdown = field(default_factory=Breakdown, compare=False, repr=False)


COUNT_FIELDS = tuple(f.name for f in fields(Counters) if f.name != "breakdown")


class StopReason(enum.Enum):
    """Why a run stopped before the walk was complete, with the exit code it gives."""

    SIGINT = ("SIGINT", 130)
    SIGTERM = ("SIGTERM", 143)
    SIGHUP = ("SIGHUP", 129)
    MAX_DELETE = ("max_delete", 4)
    MAX_RUNTIME = ("max_runtime", 5)
    MANIFEST = ("manifest write failed", 3)
    STDOUT_CLOSED = ("stdout closed", 141)
    OUTPUT_FAILED = ("log write failed", 3)  # stdout could not be written (a full disk)
    INTERNAL = ("internal error", 3)
    CANCELLED = ("cancelled", 130)  # the Python API's caller cancelled purge(): interrupted

    def __init__(self, label: str, exit_code: int) -> None:
        self.label = label
        self.exit_code = exit_code


class ExitCode(enum.IntEnum):
    OK = 0
    ENTRY_ERRORS = 1
    USAGE = 2
    FATAL = 3
    METRICS = 6


def exit_code_of(stop: StopReason | None, errors: int) -> int:
    if stop is not None:
        return stop.exit_code
    return ExitCode.ENTRY_ERRORS if errors else ExitCode.OK


def peak_rss_mb() -> float:
    """The process's true peak resident set size.

    ``VmHWM`` is the high-water mark of this process image. ``getrusage``'s ``ru_maxrss`` is
    the fallback only: after exec it still remembers the parent's size at fork time, so a
    tool started from a big process would report the parent's memory as its own.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(peak / (MIB if sys.platform == "darwin" else 1024), 1)


@dataclass(slots=True)
class RunReport:
    """Everything the final record says besides the counters."""

    dry_run: bool
    duration_seconds: float = 0.0
    stop_reason: StopReason | None = None
    memory_backpressure_events: int = 0
    io_threads: int = 0
    filesystem_type: str = "unknown"
    extra: dict[str, object] = field(default_factory=dict)


def final_record(counts: Counters, report: RunReport) -> dict[str, object]:
    """The ``Purge operation completed`` fields. Every documented key is always present."""
    duration = max(report.duration_seconds, 1e-9)
    record: dict[str, object] = {name: getattr(counts, name) for name in COUNT_FIELDS}
    record.update(
        duration_seconds=round(report.duration_seconds, 3),
        files_per_second=round(counts.files_scanned / duration, 2),
        mb_freed=round(counts.bytes_freed / MIB, 2),
        mb_to_purge=round(counts.bytes_to_purge / MIB, 2),
        dry_run=report.dry_run,
        interrupted=report.stop_reason is not None,
        stop_reason=report.stop_reason.label if report.stop_reason else None,
        peak_memory_mb=peak_rss_mb(),
        memory_backpressure_events=report.memory_backpressure_events,
        io_threads=report.io_threads,
        filesystem_type=report.filesystem_type,
    )
    record.update(breakdown_tables(counts.breakdown))
    record.update(report.extra)
    return record
