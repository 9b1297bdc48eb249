"""Counters, rates and the final record.

Each worker thread owns one :class:`Counters` and is the only writer of it, so counting needs
no lock on the hot path. Readers (the progress record, the final record) add them up; a sum
taken while workers run is a consistent-enough snapshot for progress, and the final sum is
taken after every worker has stopped.
"""

from __future__ import annotations

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
    """What was selected for deletion, by top-level directory and by age. One per thread."""

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


def age_edges(now_ns: int) -> list[int]:
    """Ascending timestamps for bisect: index i is the bucket AGE_LABELS[i]."""
    return [now_ns - days * NS_PER_DAY for days in AGE_EDGES_DAYS]


def merge_breakdowns(parts: list[Breakdown]) -> dict[str, dict[str, dict[str, int]]]:
    tops: dict[str, list[int]] = {}
    ages = [[0, 0] for _ in AGE_LABELS]
    for part in list(parts):
        for name, (files, size) in list(part.by_top.items()):
            cell = tops.setdefault(name, [0, 0])
            cell[0] += files
            cell[1] += size
        for cell, (files, size) in zip(ages, part.by_age, strict=True):
            cell[0] += files
            cell[1] += size
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

    def add(self, other: Counters) -> None:
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


COUNT_FIELDS = tuple(f.name for f in fields(Counters) if f.name != "breakdown")


def total(parts: list[Counters]) -> Counters:
    result = Counters()
    for part in list(parts):
        result.add(part)
    return result


def add_record_counts(counts: Counters, record: dict) -> None:
    """Add the counts of another process's record (progress or final) to ``counts``."""
    for name in COUNT_FIELDS:
        value = record.get(name)
        if isinstance(value, int):
            setattr(counts, name, getattr(counts, name) + value)


def merge_report_records(mine: dict, other: dict) -> dict:
    """The report of two processes together. Another process's top-level list is already cut
    to its largest entries, so a merged ``(other)`` is approximate; totals are exact."""
    parts = []
    for source in (mine, other):
        part = Breakdown()
        for name, cell in source.get("by_top_level_dir", {}).items():
            part.by_top[name] = [cell["files"], cell["bytes"]]
        for i, label in enumerate(AGE_LABELS):
            cell = source.get("by_age", {}).get(label)
            if cell:
                part.by_age[i] = [cell["files"], cell["bytes"]]
        parts.append(part)
    return merge_breakdowns(parts)


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
    interrupted: bool = False
    stop_reason: str | None = None
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
        interrupted=report.interrupted,
        stop_reason=report.stop_reason,
        peak_memory_mb=peak_rss_mb(),
        memory_backpressure_events=report.memory_backpressure_events,
        io_threads=report.io_threads,
        filesystem_type=report.filesystem_type,
    )
    record.update(report.extra)
    return record
