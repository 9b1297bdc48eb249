"""Prometheus metrics: a node_exporter textfile and/or a Pushgateway push, at the end of a run
and, through :func:`publish_progress`, while it runs.

Alerts must be able to trust these series, so:

* **Groups.** Every series belongs to one group: ``job`` (``--push-job``), the
  ``--push-label`` pairs, ``dry_run`` (``"true"``/``"false"``) and, with ``--shard-count``,
  ``shard``. On the Pushgateway the group is the grouping key (``job`` in the URL path, the
  rest as ``/name/value`` segments); in the textfile the same pairs are labels on every
  series. A dry run and a real run are different groups, so neither ever replaces the other's
  series; two purges that share one textfile (other push labels or job) keep each other's
  series too: the file is rewritten under a lock with the other groups copied forward.
* **Gauges for per-run values,** named ``efspurge_last_run_*``: a run's counts are not
  counters (``increase()`` of two equal runs reads 0), and there are no ``_created`` series.
* **The last success is never erased** by a run that did not succeed (exit other than 0 or 1):
  the Pushgateway push is a POST (``pushadd``) that then does not carry
  ``efspurge_last_success_timestamp_seconds`` (a POST replaces only the names it carries), and
  the textfile copies the previous value of the group forward.
* **Progress** (``efspurge_run_in_progress``, ``efspurge_current_run_*``) is published during
  the run by :func:`publish_progress` (in a background thread, at most one at a time) and
  once more with the final values by :func:`publish`.
* A previous textfile that cannot be read, decoded or parsed counts as no previous file, and
  a push has one total deadline (connect, send, answer), whatever the server does.

The families and their values: :mod:`efspurge.metricfamilies`; the textfile and the push:
:mod:`efspurge.metricsio`.
"""

from __future__ import annotations

import logging
import threading
import time

from efspurge.metricfamilies import final_families, progress_counts, progress_families
from efspurge.metricsio import PushAbort, push, write_textfile
from efspurge.settings import Settings

# Total time a final push may take (connect, send, answer), and a progress push.
PUSH_DEADLINE_SECONDS = 10.0
PROGRESS_PUSH_DEADLINE_SECONDS = 5.0


# --- progress while running ---------------------------------------------------------------------


class _ProgressState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings: Settings | None = None  # the run (by identity) this state belongs to
        self.closed = False
        self.thread: threading.Thread | None = None
        self.abort: PushAbort | None = None
        self.failures = 0
        self.last_error = ""
        # The counts of the last update, and when they last changed: the timestamp published
        # with them, so that a run whose counts stop moving (a hung mount) looks stalled.
        self.counts: tuple | None = None
        self.changed_at = 0.0


_progress = _ProgressState()


def publish_progress(snapshot: dict, settings: Settings) -> None:
    """Publish the progress of a running run. Returns at once and never raises: the work is
    done in a background thread, one update at a time (an update that comes while the previous
    one is still going is dropped), each push within PROGRESS_PUSH_DEADLINE_SECONDS.

    ``snapshot`` holds files_scanned, files_to_purge, files_purged, bytes_to_purge,
    bytes_freed, dirs_scanned, empty_dirs_deleted, errors and elapsed_seconds (missing keys
    count as 0). Once :func:`publish` has run for these settings, further calls do nothing.
    """
    try:
        if not (settings.metrics_file or settings.pushgateway):
            return
        with _progress.lock:
            if _progress.settings is not settings:
                _progress.__init__()
                _progress.settings = settings
            counts = progress_counts(snapshot)
            if counts != _progress.counts:
                _progress.counts, _progress.changed_at = counts, time.time()
            if _progress.closed or (_progress.thread and _progress.thread.is_alive()):
                return
            abort = _progress.abort = PushAbort()
            _progress.thread = threading.Thread(
                target=_progress_job,
                args=(dict(snapshot), settings, abort, _progress.changed_at),
                name="efspurge-metrics-progress",
                daemon=True,
            )
            _progress.thread.start()
    except Exception:
        pass


def _progress_job(snapshot: dict, settings: Settings, abort: PushAbort, changed_at: float):
    step = "progress"
    try:
        families = progress_families(snapshot, changed_at)
        if settings.metrics_file and not abort.aborted:
            step = "file"
            write_textfile(settings.metrics_file, settings, families, final=False)
        if settings.pushgateway and not abort.aborted:
            step = "push"
            push(settings, families, PROGRESS_PUSH_DEADLINE_SECONDS, abort)
    except Exception as exc:
        _progress.failures += 1
        _progress.last_error = f"{step}: {exc}"


def _stop_progress(settings: Settings) -> tuple[int, str]:
    """No progress update may land after the final one: stop accepting them, cut an in-flight
    push short, and wait for it to end. Returns (failed updates, last error)."""
    with _progress.lock:
        if _progress.settings is not settings:
            _progress.__init__()
            _progress.settings = settings
        _progress.closed = True
        thread, abort = _progress.thread, _progress.abort
    if thread is not None and thread.is_alive():
        if abort is not None:
            abort.abort()
        thread.join(2)
    return _progress.failures, _progress.last_error


# --- the end of a run --------------------------------------------------------------------------


def publish(record: dict, settings: Settings, exit_code: int, log: logging.Logger) -> bool:
    """Write and/or push the final metrics. Returns False if any of it failed (already
    logged). Takes at most about PUSH_DEADLINE_SECONDS for the push, whatever the server does.
    """
    failures, last_error = _stop_progress(settings)
    if failures:
        log.warning(
            "Some progress metric updates failed",
            extra={"extra_fields": {"failed_updates": failures, "last_error": last_error}},
        )
    ok = True
    now = time.time()
    if settings.metrics_file:
        try:
            # The previous value of this group's last success is carried by write_textfile.
            write_textfile(
                settings.metrics_file,
                settings,
                final_families(record, exit_code, now, None),
                final=True,
            )
        except OSError as exc:
            ok = False
            log.error(
                "Could not write the metrics file",
                extra={"extra_fields": {"path": settings.metrics_file, "error": str(exc)}},
            )
    if settings.pushgateway:
        try:
            push(settings, final_families(record, exit_code, now, None), PUSH_DEADLINE_SECONDS)
        except Exception as exc:  # refused, HTTP errors, the deadline: all mean "not pushed"
            ok = False
            log.error(
                "Could not push metrics to the Pushgateway",
                extra={"extra_fields": {"url": settings.pushgateway, "error": str(exc)}},
            )
    return ok
