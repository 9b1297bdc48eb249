"""Prometheus metrics at the end of a run: a node_exporter textfile and/or a Pushgateway push.

Names follow Prometheus conventions: the ``efspurge_`` prefix, base units (seconds, bytes),
``_total`` on counters. Every series carries ``dry_run`` and ``outcome`` labels (and ``shard``
with --shard-count), so a dry run never looks like a purge on a dashboard.

``efspurge_last_success_timestamp_seconds`` is what an alert watches ("no successful purge in
26 hours"). A run succeeds when it walked the whole tree (exit 0, or 1 when some entries
failed: those are counted in ``efspurge_errors_total``). A run that did not succeed must not
erase the last success:

* Pushgateway: the push is a POST (``pushadd``), which replaces only the metric names it
  carries; a failed run does not carry the last-success gauge, so the previous value stays.
* Textfile: the file is rewritten whole, so a failed run copies the last-success value from
  the previous file.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, pushadd_to_gateway
from prometheus_client.exposition import write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from efspurge.settings import Settings

LAST_SUCCESS = "efspurge_last_success_timestamp_seconds"
OUTCOMES = {0: "success", 1: "entry_errors", 3: "failed", 4: "max_delete", 5: "max_runtime"}
SUCCESS_CODES = frozenset({0, 1})

# (metric name without _total, help, key in the final record)
_COUNTERS = (
    ("efspurge_files_scanned", "Regular files whose age was checked.", "files_scanned"),
    ("efspurge_files_selected", "Old files selected for deletion (also in a dry run).",
     "files_to_purge"),
    ("efspurge_files_deleted", "Files actually deleted (0 in a dry run).", "files_purged"),
    ("efspurge_bytes_freed", "Size of the files actually deleted, in bytes.", "bytes_freed"),
    ("efspurge_empty_dirs_deleted", "Empty directories removed.", "empty_dirs_deleted"),
    ("efspurge_errors", "Entries that failed (permission, I/O, stale handle).", "errors"),
)  # fmt: skip


def outcome_of(exit_code: int) -> str:
    return OUTCOMES.get(exit_code, "interrupted" if exit_code >= 128 else "failed")


def build_registry(
    record: dict, settings: Settings, exit_code: int, now: float, last_success: float | None
) -> CollectorRegistry:
    labels = {"dry_run": str(settings.dry_run).lower(), "outcome": outcome_of(exit_code)}
    if settings.shard_count > 1:
        labels["shard"] = str(settings.shard_index)
    names = list(labels)
    registry = CollectorRegistry()
    for name, help_text, key in _COUNTERS:
        Counter(name, help_text, names, registry=registry).labels(**labels).inc(record[key])
    gauges = (
        ("efspurge_run_duration_seconds", "Wall time of the last run.", record["duration_seconds"]),
        ("efspurge_last_run_timestamp_seconds", "When the last run ended.", now),
        ("efspurge_last_run_exit_code", "Exit code of the last run.", exit_code),
        ("efspurge_peak_memory_bytes", "Peak resident memory of the last run.",
         record["peak_memory_mb"] * 1024 * 1024),
    )  # fmt: skip
    for name, help_text, value in gauges:
        Gauge(name, help_text, names, registry=registry).labels(**labels).set(value)
    success_at = now if exit_code in SUCCESS_CODES else last_success
    if success_at is not None:
        success_labels = {k: v for k, v in labels.items() if k != "outcome"}
        Gauge(
            LAST_SUCCESS,
            "When the last run that walked the whole tree ended.",
            list(success_labels),
            registry=registry,
        ).labels(**success_labels).set(success_at)
    return registry


def _previous_success(path: str, dry_run: bool) -> float | None:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == LAST_SUCCESS
                    and sample.labels.get("dry_run") == str(dry_run).lower()
                ):
                    return sample.value
    except ValueError:
        return None
    return None


def grouping_key(settings: Settings) -> dict[str, str]:
    key = dict(pair.split("=", 1) for pair in settings.push_label)
    if settings.shard_count > 1:
        key.setdefault("shard", str(settings.shard_index))
    return key


def publish(record: dict, settings: Settings, exit_code: int, log: logging.Logger) -> bool:
    """Write and/or push the metrics. Returns False if any of it failed (already logged)."""
    ok = True
    now = time.time()
    if settings.metrics_file:
        previous = _previous_success(settings.metrics_file, settings.dry_run)
        registry = build_registry(record, settings, exit_code, now, previous)
        try:
            # prometheus_client writes a temporary file beside the target and renames it:
            # the textfile collector never reads a half-written file.
            write_to_textfile(settings.metrics_file, registry)
        except OSError as exc:
            ok = False
            log.error(
                "Could not write the metrics file",
                extra={"extra_fields": {"path": settings.metrics_file, "error": str(exc)}},
            )
    if settings.pushgateway:
        registry = build_registry(record, settings, exit_code, now, None)
        try:
            pushadd_to_gateway(
                settings.pushgateway,
                job=settings.push_job,
                registry=registry,
                grouping_key=grouping_key(settings),
                timeout=10,
            )
        except Exception as exc:  # URLError, HTTPError, timeouts: all mean "not pushed"
            ok = False
            log.error(
                "Could not push metrics to the Pushgateway",
                extra={"extra_fields": {"url": settings.pushgateway, "error": str(exc)}},
            )
    return ok
