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
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import logging
import os
import platform
import socket
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, pushadd_to_gateway
from prometheus_client.exposition import write_to_textfile
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from efspurge import __version__
from efspurge.settings import Settings

LAST_SUCCESS = "efspurge_last_success_timestamp_seconds"
IN_PROGRESS = "efspurge_run_in_progress"
BUILD_INFO = "efspurge_build_info"
OUTCOMES = {0: "success", 1: "entry_errors", 3: "failed", 4: "max_delete", 5: "max_runtime"}
ALL_OUTCOMES = ("success", "entry_errors", "failed", "max_delete", "max_runtime", "interrupted")
STOP_REASONS = (
    "none",
    "SIGTERM",
    "SIGINT",
    "max_delete",
    "max_runtime",
    "internal error",
    "manifest write failed",
    "stdout closed",
)
SUCCESS_CODES = frozenset({0, 1})

# Total time a final push may take (connect, send, answer), and a progress push.
PUSH_DEADLINE_SECONDS = 10.0
PROGRESS_PUSH_DEADLINE_SECONDS = 5.0

# Labels that describe a series within its group (not part of the group's identity).
SERIES_LABELS = frozenset({"outcome", "reason", "version", "python_version"})

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
_LAST_RUN_FAMILIES = frozenset(
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


def grouping_key(settings: Settings) -> dict[str, str]:
    """The Pushgateway grouping key besides ``job``: the push labels, ``dry_run``, ``shard``."""
    key = dict(pair.split("=", 1) for pair in settings.push_label)
    key["dry_run"] = str(settings.dry_run).lower()
    if settings.shard_count > 1:
        key.setdefault("shard", str(settings.shard_index))
    return key


def group_labels(settings: Settings) -> dict[str, str]:
    """The group as textfile labels: ``job`` plus the grouping key."""
    return {"job": settings.push_job, **grouping_key(settings)}


# --- the families ------------------------------------------------------------------------------


class _Families:
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


def _build_info(out: _Families) -> None:
    out.gauge(
        BUILD_INFO,
        "Always 1; the labels say which efspurge and Python wrote these metrics.",
        1,
        version=__version__,
        python_version=platform.python_version(),
    )


def _progress_families(
    out: _Families, values: dict, in_progress: bool, elapsed: float, now: float
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
) -> _Families:
    """Everything a run publishes at its end."""
    out = _Families()
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


def progress_families(snapshot: dict, now: float) -> _Families:
    out = _Families()
    _build_info(out)
    values = {suffix: snapshot.get(key, 0) or 0 for suffix, _, _, key in _RUN_VALUES}
    _progress_families(out, values, True, snapshot.get("elapsed_seconds", 0) or 0, now)
    return out


def _registry(families: Iterable[Metric]) -> CollectorRegistry:
    families = list(families)

    class _Collector:
        def collect(self):
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return registry


# --- textfile ----------------------------------------------------------------------------------


def _read_previous(path: str) -> list[Metric]:
    """The previous textfile's families, or [] if it is missing or unreadable in any way
    (not UTF-8, not the exposition format, ...): a bad previous file must never stop a run."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
        return list(text_string_to_metric_families(text))
    except Exception:  # OSError, UnicodeDecodeError, ValueError, whatever the parser raises
        return []


def _group_of(labels: dict[str, str]) -> tuple:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in SERIES_LABELS))


def write_textfile(path: str, settings: Settings, new: _Families, *, final: bool) -> None:
    """Rewrite the textfile: this group's new families, this group's previous last-run
    families that ``new`` does not carry, and every other group's efspurge series as they
    were. Serialized between processes by ``flock`` on ``PATH.lock``; the write itself is a
    temporary file renamed into place, so the collector never reads half a file."""
    labels = group_labels(settings)
    ours = _group_of(labels)
    with _locked(path + ".lock"):
        previous = _read_previous(path)
        merged: dict[str, Metric] = {}

        def family(name: str, help_text: str) -> Metric:
            if name not in merged:
                merged[name] = Metric(name, help_text, "gauge")
            return merged[name]

        for name, fam in new.families.items():
            target = family(name, fam.documentation)
            for s in fam.samples:
                target.add_sample(name, {**labels, **s.labels}, s.value)
        for fam in previous:
            if not fam.name.startswith("efspurge_") or fam.type not in ("gauge", "unknown"):
                continue  # the first format's counters, or someone else's: not carried
            for s in fam.samples:
                if "job" not in s.labels:  # the first format (no groups): keep its last success
                    if _adopt(fam.name, s.labels, labels, new, merged):
                        family(LAST_SUCCESS, fam.documentation).add_sample(
                            LAST_SUCCESS, labels, s.value
                        )
                    continue
                mine = _group_of(s.labels) == ours
                if mine and (fam.name in new.families or fam.name not in _LAST_RUN_FAMILIES):
                    continue
                if mine and final and fam.name != LAST_SUCCESS:
                    continue  # a final write replaces the group's whole last run
                if not mine and not _is_current(fam.name):
                    continue
                family(fam.name, fam.documentation).add_sample(s.name, s.labels, s.value)
        write_to_textfile(path, _registry(merged.values()))


def _adopt(name: str, old: dict, labels: dict, new: _Families, merged: dict) -> bool:
    """Whether a last-success sample of the first format is this group's, to carry into the
    new labels (once, and only when this write does not bring its own)."""
    return (
        name == LAST_SUCCESS
        and LAST_SUCCESS not in new.families
        and not any(s.labels == labels for s in getattr(merged.get(name), "samples", ()))
        and old.get("dry_run") == labels["dry_run"]
        and old.get("shard") == labels.get("shard")
    )


def _is_current(name: str) -> bool:
    return (
        name in _LAST_RUN_FAMILIES
        or name in (IN_PROGRESS, BUILD_INFO)
        or name.startswith("efspurge_current_run_")
    )


@contextlib.contextmanager
def _locked(path: str):
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        yield  # a read-only directory: the write below will fail and say so
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- Pushgateway -------------------------------------------------------------------------------


class _Abort:
    """Lets another thread cut an in-flight push short."""

    def __init__(self) -> None:
        self.aborted = False
        self.conn: http.client.HTTPConnection | None = None

    def abort(self) -> None:
        self.aborted = True
        conn = self.conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)


def deadline_handler(deadline: float, abort: _Abort | None = None) -> Callable:
    """A prometheus_client push handler with ONE total deadline for connecting, sending and
    reading the answer. Socket timeouts alone do not bound a request: a server that sends a
    byte every few seconds keeps each read alive forever. The request runs in a daemon thread;
    at the deadline its socket is shut down and the push fails with TimeoutError."""
    abort = abort or _Abort()

    def handler(url, method, timeout, headers, data):
        def handle() -> None:
            parts = urlsplit(url)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            cls = http.client.HTTPSConnection if parts.scheme == "https" else (
                http.client.HTTPConnection
            )  # fmt: skip
            result: dict = {}

            def request() -> None:
                conn = cls(parts.hostname, parts.port, timeout=deadline)
                abort.conn = conn
                try:
                    conn.connect()
                    if abort.aborted:
                        return
                    conn.request(method, path or "/", body=data, headers=dict(headers))
                    resp = conn.getresponse()
                    result["status"] = (resp.status, resp.reason)
                    resp.read(65536)
                except BaseException as exc:
                    result["error"] = exc
                finally:
                    conn.close()

            thread = threading.Thread(target=request, name="efspurge-push", daemon=True)
            thread.start()
            thread.join(deadline)
            if thread.is_alive():
                abort.abort()
                thread.join(1)
                raise TimeoutError(f"no complete answer from the Pushgateway in {deadline:g} s")
            if "error" in result:
                raise result["error"]
            if "status" not in result:
                raise OSError("push aborted")
            status, reason = result["status"]
            if status >= 400:
                raise OSError(f"error talking to pushgateway: {status} {reason}")

        return handle

    return handler


def push(settings: Settings, families: _Families, deadline: float, abort=None) -> None:
    pushadd_to_gateway(
        settings.pushgateway,
        job=settings.push_job,
        registry=_registry(families.families.values()),
        grouping_key=grouping_key(settings),
        timeout=deadline,
        handler=deadline_handler(deadline, abort),
    )


# --- progress while running ---------------------------------------------------------------------


class _ProgressState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings: Settings | None = None  # the run (by identity) this state belongs to
        self.closed = False
        self.thread: threading.Thread | None = None
        self.abort: _Abort | None = None
        self.failures = 0
        self.last_error = ""


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
            if _progress.closed or (_progress.thread and _progress.thread.is_alive()):
                return
            abort = _progress.abort = _Abort()
            _progress.thread = threading.Thread(
                target=_progress_job,
                args=(dict(snapshot), settings, abort),
                name="efspurge-metrics-progress",
                daemon=True,
            )
            _progress.thread.start()
    except Exception:
        pass


def _progress_job(snapshot: dict, settings: Settings, abort: _Abort) -> None:
    step = "progress"
    try:
        families = progress_families(snapshot, time.time())
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
