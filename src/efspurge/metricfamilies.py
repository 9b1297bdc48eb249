"""The metric families a run publishes: their names, help texts and values, at the end of a
run (:func:`final_families`) and while it runs (:func:`progress_families`).

Samples carry only their series labels; the group (``job``, the push labels, ``dry_run``,
``shard``) is added where the families are written or pushed (:mod:`efspurge.metricsio`).
What these series promise to alerts, and when they are published: :mod:`efspurge.metrics`.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from efspurge import __version__

LAST_SUCCESS = "efspurge_last_success_timestamp_seconds"
IN_PROGRESS = "efspurge_run_in_progress"
BUILD_INFO = "efspurge_build_info"
OUTCOMES = {0: "success", 1: "entry_errors", 3: "failed", 4: "max_delete", 5: "max_runtime"}
ALL_OUTCOMES = ("success", "entry_errors", "failed", "max_delete", "max_runtime", "interrupted")
STOP_REASONS = (
    "none",
    "SIGTERM",
    "SIGINT",
    "SIGHUP",
    "max_delete",
    "max_runtime",
    "internal error",
    "manifest write failed",
    "stdout closed",
    "log write failed",
    "cancelled",
)
SUCCESS_CODES = frozenset({0, 1})

# (name suffix, help, key in the final record, key in a progress snapshot, scale)
_RUN_VALUES = (
    ("files_scanned", "Regular files whose age was checked.", "files_scanned", "files_scanned"),
    ("files_selected", "Old files selected for deletion (also in a dry run).",
     "files_to_purge", "files_to_purge"),
    ("files_deleted", "Files actually deleted (0 in a dry run).", "files_purged",
     "files_purged"),
    ("bytes_selected", "Size of the files selected for deletion, in bytes (also in a dry run).",
     "bytes_to_purge", "bytes_to_purge"),
    ("bytes_freed", "Size of the files actually deleted, in bytes (0 in a dry run).",
     "bytes_freed", "bytes_freed"),
    ("dirs_scanned", "Directories listed.", "dirs_scanned", "dirs_scanned"),
    ("empty_dirs_deleted", "Empty directories removed (0 in a dry run).",
     "empty_dirs_deleted", "empty_dirs_deleted"),
    ("errors", "Entries that failed (permission, I/O, stale handle).", "errors", "errors"),
)  # fmt: skip

# Families a later write of the same group keeps from the previous textfile when it does not
# write them itself (a progress update keeps the last run; a failed run keeps the success).
LAST_RUN_FAMILIES = frozenset(
    {f"efspurge_last_run_{suffix}" for suffix, *_ in _RUN_VALUES}
    | {
        "efspurge_last_run_timestamp_seconds",
        "efspurge_last_run_duration_seconds",
        "efspurge_last_run_exit_code",
        "efspurge_last_run_outcome",
        "efspurge_last_run_stop_reason",
        "efspurge_last_run_empty_dirs_selected",
        "efspurge_last_run_peak_memory_bytes",
        LAST_SUCCESS,
    }
)


def outcome_of(exit_code: int) -> str:
    return OUTCOMES.get(exit_code, "interrupted" if exit_code >= 128 else "failed")


class Families:
    """Gauge families under construction, in order. Samples carry only their series labels;
    the group's labels are added when written to a textfile."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def gauge(self, name: str, help_text: str, value: float, **labels: str) -> None:
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = Metric(name, help_text, "gauge")
        family.add_sample(name, labels, float(value))

    def stateset(self, name: str, help_text: str, label: str, states, current: str) -> None:
        states = list(states) + ([current] if current not in states else [])
        for state in states:
            self.gauge(name, help_text, 1 if state == current else 0, **{label: state})


def _build_info(out: Families) -> None:
    out.gauge(
        BUILD_INFO,
        "Always 1; the labels say which efspurge and Python wrote these metrics.",
        1,
        version=__version__,
        python_version=platform.python_version(),
    )


def _progress_families(
    out: Families, values: dict, in_progress: bool, elapsed: float, now: float
) -> None:
    out.gauge(IN_PROGRESS, "1 while a run is going on, 0 once it has ended.", int(in_progress))
    for suffix, help_text, *_ in _RUN_VALUES:
        out.gauge(f"efspurge_current_run_{suffix}", f"{help_text} So far in this run.",
                  values.get(suffix, 0))  # fmt: skip
    out.gauge("efspurge_current_run_elapsed_seconds", "Seconds since the run started.", elapsed)
    out.gauge(
        "efspurge_current_run_updated_timestamp_seconds",
        "When the current_run values were last updated.",
        now,
    )


def final_families(
    record: dict, exit_code: int, now: float, last_success: float | None
) -> Families:
    """Everything a run publishes at its end."""
    out = Families()
    _build_info(out)
    values = {suffix: record.get(key, 0) or 0 for suffix, _, key, _ in _RUN_VALUES}
    for suffix, help_text, *_ in _RUN_VALUES:
        out.gauge(f"efspurge_last_run_{suffix}", f"{help_text} In the last run.", values[suffix])
    out.gauge(
        "efspurge_last_run_empty_dirs_selected",
        "Empty directories selected for removal (also in a dry run). In the last run.",
        record.get("empty_dirs_to_delete", 0) or 0,
    )
    duration = record.get("duration_seconds", 0) or 0
    out.gauge("efspurge_last_run_duration_seconds", "Wall time of the last run.", duration)
    # The help texts of the next two are those of the first metrics format (before groups):
    # a Pushgateway refuses a push whose help text differs from the same family's in another
    # group.
    out.gauge("efspurge_last_run_timestamp_seconds", "When the last run ended.", now)
    out.gauge("efspurge_last_run_exit_code", "Exit code of the last run.", exit_code)
    out.stateset(
        "efspurge_last_run_outcome",
        "1 for the outcome of the last run, 0 for the others.",
        "outcome",
        ALL_OUTCOMES,
        outcome_of(exit_code),
    )
    out.stateset(
        "efspurge_last_run_stop_reason",
        "1 for why the last run stopped early ('none': it did not), 0 for the others.",
        "reason",
        STOP_REASONS,
        str(record.get("stop_reason") or "none"),
    )
    out.gauge(
        "efspurge_last_run_peak_memory_bytes",
        "Peak resident memory of the last run.",
        (record.get("peak_memory_mb", 0) or 0) * 1024 * 1024,
    )
    success_at = now if exit_code in SUCCESS_CODES else last_success
    if success_at is not None:
        out.gauge(LAST_SUCCESS, "When the last run that walked the whole tree ended.", success_at)
    _progress_families(out, values, False, duration, now)
    return out


def progress_counts(snapshot: dict) -> tuple:
    """The counts a progress update publishes: what says whether the run moved (the rates and
    the memory in a snapshot change on their own)."""
    return tuple(snapshot.get(key, 0) or 0 for *_, key in _RUN_VALUES)


def progress_families(snapshot: dict, changed_at: float) -> Families:
    """While a run goes on. The update timestamp is when the counts last changed (the help
    text, which a Pushgateway requires unchanged across versions, says "updated")."""
    out = Families()
    _build_info(out)
    values = {suffix: snapshot.get(key, 0) or 0 for suffix, _, _, key in _RUN_VALUES}
    _progress_families(out, values, True, snapshot.get("elapsed_seconds", 0) or 0, changed_at)
    return out


def registry_of(families: Iterable[Metric]) -> CollectorRegistry:
    families = list(families)

    class _Collector:
        def collect(self):
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return registry
