"""Where the metric families go: the node_exporter textfile and the Pushgateway.

A run's series form one group: ``job`` (``--push-job``), the ``--push-label`` pairs,
``dry_run`` and, with ``--shard-count``, ``shard``. In the textfile they are labels on every
series, and the file is rewritten under a lock with the other groups' series carried forward;
on the Pushgateway they are the grouping key, and a push has one total deadline. What is
published and when: :mod:`efspurge.metrics`.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import socket
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from prometheus_client import pushadd_to_gateway
from prometheus_client.exposition import write_to_textfile
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from efspurge.metricfamilies import (
    BUILD_INFO,
    IN_PROGRESS,
    LAST_RUN_FAMILIES,
    LAST_SUCCESS,
    Families,
    registry_of,
)
from efspurge.settings import Settings

# Labels that describe a series within its group (not part of the group's identity).
SERIES_LABELS = frozenset({"outcome", "reason", "version", "python_version"})


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


def write_textfile(path: str, settings: Settings, new: Families, *, final: bool) -> None:
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
                if mine and (fam.name in new.families or fam.name not in LAST_RUN_FAMILIES):
                    continue
                if mine and final and fam.name != LAST_SUCCESS:
                    continue  # a final write replaces the group's whole last run
                if not mine and not _is_current(fam.name):
                    continue
                family(fam.name, fam.documentation).add_sample(s.name, s.labels, s.value)
        write_to_textfile(path, registry_of(merged.values()))


def _adopt(name: str, old: dict, labels: dict, new: Families, merged: dict) -> bool:
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
        name in LAST_RUN_FAMILIES
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


class PushAbort:
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


def deadline_handler(deadline: float, abort: PushAbort | None = None) -> Callable:
    """A prometheus_client push handler with ONE total deadline for connecting, sending and
    reading the answer. Socket timeouts alone do not bound a request: a server that sends a
    byte every few seconds keeps each read alive forever. The request runs in a daemon thread;
    at the deadline its socket is shut down and the push fails with TimeoutError."""
    abort = abort or PushAbort()

    def handler(url, method, timeout, headers, data):
        def handle() -> None:
            result: dict = {}

            def request() -> None:
                conn, target, extra = _connection(url, deadline)
                abort.conn = conn
                try:
                    conn.connect()
                    if abort.aborted:
                        return
                    conn.request(method, target, body=data, headers={**dict(headers), **extra})
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


def _connection(
    url: str, deadline: float
) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """The connection for a push and the request target: straight to the Pushgateway, or
    through the proxy the environment names for its scheme (``HTTP_PROXY``/``HTTPS_PROXY``,
    lower case first, and ``NO_PROXY``, read as urllib reads them). An ``https`` Pushgateway
    is reached through a CONNECT tunnel; an ``http`` one by sending the proxy the whole URL.
    A ``user:password@`` in the proxy's URL is sent as Basic proxy authorization."""
    import urllib.request  # only when pushing: it costs ~10 ms to import

    parts = urlsplit(url)
    direct = parts.path + (f"?{parts.query}" if parts.query else "") or "/"
    https = parts.scheme == "https"
    cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.netloc):
        return cls(parts.hostname, parts.port, timeout=deadline), direct, {}
    via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    auth = {}
    if via.username is not None:
        import base64
        from urllib.parse import unquote

        pair = f"{unquote(via.username)}:{unquote(via.password or '')}".encode()
        auth["Proxy-Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    if https:
        conn = http.client.HTTPSConnection(via.hostname, via.port or 80, timeout=deadline)
        conn.set_tunnel(parts.hostname, parts.port or 443, headers=auth)
        return conn, direct, {}
    return http.client.HTTPConnection(via.hostname, via.port or 80, timeout=deadline), url, auth


def push(settings: Settings, families: Families, deadline: float, abort=None) -> None:
    pushadd_to_gateway(
        settings.pushgateway,
        job=settings.push_job,
        registry=registry_of(families.families.values()),
        grouping_key=grouping_key(settings),
        timeout=deadline,
        handler=deadline_handler(deadline, abort),
    )
