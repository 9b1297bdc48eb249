"""Prometheus metrics, checked with Prometheus' own text parser, promtool, a real Pushgateway
on loopback, and real misbehaving HTTP servers for the push deadline."""

from __future__ import annotations

import http.client
import http.server
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from conftest import EFSPURGE, age_dirs, make_file, purge
from prometheus_client.parser import text_string_to_metric_families

import efspurge
from efspurge import fsops, metrics, metricsio
from efspurge.settings import Settings

REPO = Path(__file__).resolve().parent.parent
OBSERVABILITY = REPO / "docs" / "observability.md"


def published(run) -> bool:
    """What the run said about its metrics, in the record that follows the final one."""
    said = [r["message"] for r in run.log if r["message"].startswith("Metrics ")]
    assert len(said) == 1, said
    return said[0] == "Metrics published"


def build(root: Path) -> None:
    make_file(root / "logs" / "old.log", old=True, size=100)
    make_file(root / "logs" / "new.log", old=False, size=7)
    make_file(root / "cache" / "a" / "b" / "old.bin", old=True, size=2000)
    make_file(root / "top-old.txt", old=True, size=5)
    age_dirs(root)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def types(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def value(found: dict, name: str, **labels) -> float:
    matches = [v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(matches) == 1, (name, labels, [k for k in found if k[0] == name])
    return matches[0]


def present(found: dict, name: str, **labels) -> bool:
    return any(n == name and set(labels.items()) <= set(ls) for (n, ls) in found)


def fail_the_engine(monkeypatch) -> None:
    """An internal error in the middle of the walk: exit 3, outcome "failed"."""
    monkeypatch.setattr(fsops, "lstat_at", lambda name, *, dir_fd: 1 / 0)


def promtool_check(text: str) -> None:
    """promtool's own linter for the exposition format and naming conventions."""
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the textfile --------------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 2])
def test_a_metrics_file_inside_the_tree_keeps_its_lock_file_and_its_directory(tmp_path, processes):
    # The lock file is made once and never written, so it ages: it was deleted, and a writer
    # holding a lock on it no longer kept the next one out. And on a first run the metrics
    # file's directory is empty: --remove-empty-dirs removed it, and the write at the end
    # failed (both found by review). Checked on disk.
    root = tmp_path / "root"
    make_file(root / "old.log", old=True)
    lock = make_file(root / "metrics/m.prom.lock", old=True)
    lock_ino = lock.stat().st_ino
    age_dirs(root)
    run = purge(
        root,
        metrics_file=str(root / "metrics/m.prom"),
        remove_empty_dirs=True,
        processes=processes,
    )
    assert run.code == 0
    assert lock.stat().st_ino == lock_ino  # the same lock file, not deleted and made anew
    assert (root / "metrics/m.prom").exists() and not (root / "old.log").exists()
    (root / "fresh").mkdir()  # empty and old: where the next run's metrics file is to go
    age_dirs(root)
    second = purge(
        root, metrics_file=str(root / "fresh/m.prom"), remove_empty_dirs=True, processes=processes
    )
    assert second.code == 0
    assert (root / "fresh/m.prom").exists()
    assert second.stats["empty_dirs_deleted"] == 0


def test_textfile_is_gauges_named_for_the_last_run_and_matches_the_final_record(tmp_path):
    root = tmp_path / "root"
    build(root)
    prom = tmp_path / "efspurge.prom"
    run = purge(root, metrics_file=str(prom), remove_empty_dirs=True)
    text = prom.read_text()
    promtool_check(text)
    assert set(types(text).values()) == {"gauge"}
    assert "_created" not in text and "_total" not in text
    found = samples(text)
    group = {"job": "efspurge", "dry_run": "false"}
    stats = run.stats
    for metric, key in [
        ("files_scanned", "files_scanned"),
        ("files_selected", "files_to_purge"),
        ("files_deleted", "files_purged"),
        ("bytes_selected", "bytes_to_purge"),
        ("bytes_freed", "bytes_freed"),
        ("dirs_scanned", "dirs_scanned"),
        ("empty_dirs_selected", "empty_dirs_to_delete"),
        ("empty_dirs_deleted", "empty_dirs_deleted"),
        ("errors", "errors"),
    ]:
        assert value(found, f"efspurge_last_run_{metric}", **group) == stats[key], metric
    assert stats["bytes_to_purge"] == 2105 and stats["empty_dirs_deleted"] == 3
    assert value(found, "efspurge_last_run_exit_code", **group) == 0
    assert value(found, "efspurge_last_run_outcome", outcome="success", **group) == 1
    assert sum(v for (n, _), v in found.items() if n == "efspurge_last_run_outcome") == 1
    assert value(found, "efspurge_last_run_stop_reason", reason="none", **group) == 1
    assert value(found, "efspurge_build_info", version=efspurge.__version__, **group) == 1
    assert value(found, "efspurge_run_in_progress", **group) == 0
    assert value(found, "efspurge_current_run_files_deleted", **group) == stats["files_purged"]
    success = value(found, "efspurge_last_success_timestamp_seconds", **group)
    assert abs(success - time.time()) < 60
    assert success == value(found, "efspurge_last_run_timestamp_seconds", **group)
    # The temporary file was renamed away; the lock file stays (the collector reads *.prom).
    left = sorted(p.name for p in tmp_path.glob("efspurge.prom*"))
    assert left == ["efspurge.prom", "efspurge.prom.lock"]


def test_textfile_dry_run_then_failed_run_keep_the_real_last_success(tmp_path, monkeypatch):
    root = tmp_path / "root"
    build(root)
    prom = tmp_path / "efspurge.prom"
    assert purge(root, metrics_file=str(prom)).code == 0
    real = value(samples(prom.read_text()), "efspurge_last_success_timestamp_seconds")
    make_file(root / "later-old", old=True, size=3)
    dry = purge(root, metrics_file=str(prom), dry_run=True)
    assert dry.code == 0
    fail_the_engine(monkeypatch)
    make_file(root / "another-old", old=True)
    assert purge(root, metrics_file=str(prom)).code == 3
    found = samples(prom.read_text())
    real_group = {"job": "efspurge", "dry_run": "false"}
    dry_group = {"job": "efspurge", "dry_run": "true"}
    assert value(found, "efspurge_last_success_timestamp_seconds", **real_group) == real
    assert value(found, "efspurge_last_run_exit_code", **real_group) == 3
    assert value(found, "efspurge_last_run_outcome", outcome="failed", **real_group) == 1
    assert value(found, "efspurge_last_run_stop_reason", reason="internal error", **real_group)
    # The dry run's series are all still there, in their own group.
    assert value(found, "efspurge_last_run_files_selected", **dry_group) == 1
    assert value(found, "efspurge_last_success_timestamp_seconds", **dry_group) > real


def test_two_purges_sharing_a_textfile_keep_each_others_series(tmp_path):
    """--push-job and --push-label apply to the textfile: two purges on one node, one file."""
    prom = tmp_path / "efspurge.prom"
    for name in ("a", "b"):
        make_file(tmp_path / name / "old", old=True, size=10 if name == "a" else 20)
    purge(tmp_path / "a", metrics_file=str(prom), push_label=("instance=efs-a",))
    purge(tmp_path / "b", metrics_file=str(prom), push_job="logs", push_label=("instance=efs-b",))
    found = samples(prom.read_text())
    a = {"job": "efspurge", "instance": "efs-a", "dry_run": "false"}
    b = {"job": "logs", "instance": "efs-b", "dry_run": "false"}
    assert value(found, "efspurge_last_run_bytes_freed", **a) == 10
    assert value(found, "efspurge_last_run_bytes_freed", **b) == 20
    assert value(found, "efspurge_last_success_timestamp_seconds", **a) < value(
        found, "efspurge_last_success_timestamp_seconds", **b
    )


def test_parallel_writers_of_one_textfile_lose_nothing(tmp_path):
    """The rewrite is read-modify-write under a lock: eight processes at once, eight groups."""
    prom = tmp_path / "efspurge.prom"
    (tmp_path / "root").mkdir()

    def label(i: int) -> list[str]:
        return ["--push-label", f"instance=i{i}", "--processes", "1"]

    procs = [
        subprocess.Popen(
            [EFSPURGE, str(tmp_path / "root"), "--metrics-file", str(prom), *label(i)],
            stdout=subprocess.DEVNULL,
        )
        for i in range(8)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    found = samples(prom.read_text())
    for i in range(8):
        assert value(found, "efspurge_last_run_exit_code", instance=f"i{i}") == 0


@pytest.mark.parametrize(
    "content",
    [
        b'efspurge_last_success_timestamp_seconds{dry_run="false"} 12\xff\xfe\n',
        b"\x00\x01garbage{{{ not the exposition format\n",
        b'# TYPE efspurge_x gauge\nefspurge_x{a="unterminated} 1\n',
    ],
    ids=["not-utf-8", "binary", "truncated"],
)
def test_a_bad_previous_textfile_counts_as_no_previous_file(tmp_path, content):
    root = tmp_path / "root"
    make_file(root / "old", old=True)
    prom = tmp_path / "efspurge.prom"
    prom.write_bytes(content)
    run = purge(root, metrics_file=str(prom))
    assert run.code == 0 and published(run) is True
    found = samples(prom.read_text())
    assert value(found, "efspurge_last_run_files_deleted") == 1


def test_the_last_success_of_the_first_metrics_format_is_carried_over(tmp_path, monkeypatch):
    """A textfile of the first, unreleased format (counters, dry_run and outcome labels, no
    job): its last success is adopted by the group, everything else of it is dropped."""
    prom = tmp_path / "efspurge.prom"
    prom.write_text(
        "# TYPE efspurge_files_deleted_total counter\n"
        'efspurge_files_deleted_total{dry_run="false",outcome="success"} 4.0\n'
        "# TYPE efspurge_last_success_timestamp_seconds gauge\n"
        'efspurge_last_success_timestamp_seconds{dry_run="false"} 1.7e+09\n'
        'efspurge_last_success_timestamp_seconds{dry_run="true"} 1.8e+09\n'
    )
    fail_the_engine(monkeypatch)
    make_file(tmp_path / "root" / "old", old=True)
    assert purge(tmp_path / "root", metrics_file=str(prom)).code == 3
    found = samples(prom.read_text())
    assert value(found, "efspurge_last_success_timestamp_seconds") == 1.7e9
    assert value(found, "efspurge_last_success_timestamp_seconds", job="efspurge") == 1.7e9
    assert not present(found, "efspurge_files_deleted_total")


def test_progress_updates_the_textfile_and_keeps_the_last_run(tmp_path):
    root = tmp_path / "root"
    build(root)
    prom = tmp_path / "efspurge.prom"
    first = purge(root, metrics_file=str(prom))
    settings = Settings(path=str(root), metrics_file=str(prom), processes=1)
    snapshot = {
        "files_scanned": 10,
        "files_to_purge": 7,
        "files_purged": 5,
        "bytes_to_purge": 700,
        "bytes_freed": 500,
        "dirs_scanned": 3,
        "empty_dirs_deleted": 1,
        "errors": 2,
        "elapsed_seconds": 12.5,
    }
    metrics.publish_progress(snapshot, settings)
    metrics._progress.thread.join(10)
    found = samples(prom.read_text())
    assert value(found, "efspurge_run_in_progress") == 1
    assert value(found, "efspurge_current_run_files_scanned") == 10
    assert value(found, "efspurge_current_run_bytes_selected") == 700
    assert value(found, "efspurge_current_run_errors") == 2
    assert value(found, "efspurge_current_run_elapsed_seconds") == 12.5
    assert abs(value(found, "efspurge_current_run_updated_timestamp_seconds") - time.time()) < 60
    # The last run is still what the previous run published.
    assert value(found, "efspurge_last_run_files_deleted") == first.stats["files_purged"] == 3
    assert value(found, "efspurge_last_success_timestamp_seconds") > 0
    # The end of the run: in_progress back to 0, and no later progress update lands.
    record = dict(first.stats, files_purged=6)
    assert metrics.publish(record, settings, 0, logging.getLogger("test")) is True
    metrics.publish_progress(snapshot, settings)
    assert metrics._progress.thread is None or not metrics._progress.thread.is_alive()
    found = samples(prom.read_text())
    assert value(found, "efspurge_run_in_progress") == 0
    assert value(found, "efspurge_current_run_files_deleted") == 6
    assert value(found, "efspurge_last_run_files_deleted") == 6


def test_the_update_timestamp_stands_still_while_the_counts_do(tmp_path):
    # A run stuck on a hung mount still sends progress updates; its counts no longer move.
    # The timestamp advanced with every update all the same, so EfspurgeStalled ("no progress
    # for 15 minutes") never fired (found by review). It is when the counts last changed.
    prom = tmp_path / "efspurge.prom"
    settings = Settings(path=str(tmp_path), metrics_file=str(prom), processes=1)

    def update(scanned: int, elapsed: float) -> float:
        # A run's snapshot: its rate and memory move on their own, the counts do not.
        snapshot = {"files_scanned": scanned, "errors": 1, "elapsed_seconds": elapsed}
        snapshot |= {"files_per_second": scanned / elapsed, "memory_mb": 20 + elapsed}
        metrics.publish_progress(snapshot, settings)
        metrics._progress.thread.join(10)
        found = samples(prom.read_text())
        assert value(found, "efspurge_current_run_elapsed_seconds") == elapsed
        return value(found, "efspurge_current_run_updated_timestamp_seconds")

    first = update(10, 1.0)
    time.sleep(1.1)
    assert update(10, 2.1) == first  # no progress: the same timestamp
    moved = update(11, 2.2)
    assert moved > first and abs(moved - time.time()) < 60


def test_publish_progress_never_raises(tmp_path):
    settings = Settings(path=str(tmp_path), metrics_file=str(tmp_path / "no" / "dir" / "m.prom"))
    metrics.publish_progress({"files_scanned": "not a number"}, settings)
    metrics.publish_progress({}, settings)
    metrics.publish_progress({}, object())  # not even settings
    if metrics._progress.thread:
        metrics._progress.thread.join(10)
    assert metrics._progress.failures >= 1  # counted, reported by the final publish
    log = logging.getLogger("efspurge-test-progress")
    with _capture(log) as records:
        assert metrics.publish({}, settings, 0, log) is False
    assert {"Some progress metric updates failed", "Could not write the metrics file"} <= {
        r.getMessage() for r in records
    }


class _capture:
    def __init__(self, log: logging.Logger):
        self.log, self.records = log, []

    def __enter__(self):
        handler = logging.Handler()
        handler.emit = self.records.append
        self.handler = handler
        self.log.addHandler(handler)
        return self.records

    def __exit__(self, *exc):
        self.log.removeHandler(self.handler)


# --- the Pushgateway -----------------------------------------------------------------------------


@pytest.fixture
def pushgateway():
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.fail("prometheus-pushgateway is missing: scripts/test.sh installs it")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        # Debian's build persists to /var/lib/prometheus by default: state shared between test
        # runs (and worktrees). Memory only.
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the Pushgateway did not start")
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        return resp.read().decode()


def scrape(url: str) -> dict:
    return samples(scrape_text(url))


def test_push_to_a_real_pushgateway(tmp_path, pushgateway):
    root = tmp_path / "root"
    build(root)
    run = purge(root, pushgateway=pushgateway, push_job="purge-tmp", push_label=("instance=efs-a",))
    assert run.code == 0 and published(run) is True
    text = scrape_text(pushgateway)
    promtool_check("\n".join(line for line in text.splitlines() if "efspurge" in line) + "\n")
    assert "efspurge_" in text and "efspurge_last_run_files_deleted_created" not in text
    found = samples(text)
    group = {"job": "purge-tmp", "instance": "efs-a", "dry_run": "false"}
    assert value(found, "efspurge_last_run_files_deleted", **group) == run.stats["files_purged"]
    assert value(found, "efspurge_last_run_bytes_selected", **group) == 2105
    assert value(found, "efspurge_build_info", version=efspurge.__version__, **group) == 1
    assert value(found, "efspurge_run_in_progress", **group) == 0
    first = value(found, "efspurge_last_success_timestamp_seconds", **group)
    assert abs(first - time.time()) < 60


def test_pushgateway_dry_run_then_failed_run_keep_the_real_last_success(
    tmp_path, pushgateway, monkeypatch
):
    root = tmp_path / "root"
    build(root)
    labels = {"pushgateway": pushgateway, "push_label": ("instance=a",)}
    purge(root, **labels)
    real = value(scrape(pushgateway), "efspurge_last_success_timestamp_seconds", instance="a")
    make_file(root / "later-old", old=True)
    assert purge(root, dry_run=True, **labels).code == 0
    fail_the_engine(monkeypatch)
    assert purge(root, **labels).code == 3
    found = scrape(pushgateway)
    real_group = {"instance": "a", "dry_run": "false"}
    assert value(found, "efspurge_last_success_timestamp_seconds", **real_group) == real
    assert value(found, "efspurge_last_run_exit_code", **real_group) == 3
    assert value(found, "efspurge_last_run_outcome", outcome="failed", **real_group) == 1
    assert value(found, "efspurge_last_run_files_selected", instance="a", dry_run="true") == 1


def test_shards_push_into_their_own_groups(tmp_path, pushgateway):
    root = tmp_path / "root"
    build(root)
    for index in range(2):
        purge(root, pushgateway=pushgateway, shard_count=2, shard_index=index, dry_run=True)
    found = scrape(pushgateway)
    per_shard = [
        value(found, "efspurge_last_run_files_selected", job="efspurge", shard=str(i))
        for i in range(2)
    ]
    whole = purge(root, dry_run=True)
    assert sum(per_shard) == whole.stats["files_to_purge"] == 3
    assert all(n > 0 for n in per_shard)


def test_progress_is_pushed_while_running_and_cleared_at_the_end(tmp_path, pushgateway):
    root = tmp_path / "root"
    build(root)
    first = purge(root, pushgateway=pushgateway)
    settings = Settings(path=str(root), pushgateway=pushgateway, processes=1)
    metrics.publish_progress({"files_scanned": 42, "elapsed_seconds": 3}, settings)
    metrics._progress.thread.join(10)
    found = scrape(pushgateway)
    assert value(found, "efspurge_run_in_progress", dry_run="false") == 1
    assert value(found, "efspurge_current_run_files_scanned", dry_run="false") == 42
    assert (
        value(found, "efspurge_last_run_files_deleted", dry_run="false")
        == first.stats["files_purged"]
    )
    metrics.publish(dict(first.stats), settings, 0, logging.getLogger("test"))
    assert value(scrape(pushgateway), "efspurge_run_in_progress", dry_run="false") == 0


def test_push_failure_is_logged_and_fails_the_run_only_when_asked(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens here
    make_file(tmp_path / "old", old=True)
    lenient = purge(tmp_path, pushgateway=dead)
    assert lenient.code == 0 and published(lenient) is False
    assert any(r["message"] == "Could not push metrics to the Pushgateway" for r in lenient.log)
    strict = purge(tmp_path, pushgateway=dead, fail_on_push_error=True)
    assert strict.code == 6


class ForwardProxy:
    """A real HTTP proxy on loopback: forwards absolute-URI requests to their server and
    answers CONNECT with 403 (enough to see the tunnel asked for). Records what it saw."""

    def __init__(self) -> None:
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_CONNECT(self) -> None:
                seen.append(("CONNECT", self.path, self.headers.get("Proxy-Authorization")))
                self.send_error(403)

            def forward(self) -> None:
                seen.append((self.command, self.path, self.headers.get("Proxy-Authorization")))
                target = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                conn = http.client.HTTPConnection(target.netloc, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k != "Proxy-Authorization"}
                path = target.path + (f"?{target.query}" if target.query else "")
                conn.request(self.command, path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_PUT = do_POST = do_GET = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = ForwardProxy()
    yield server
    server.close()


def test_the_push_goes_through_the_proxy_of_the_environment(tmp_path, pushgateway, proxy):
    # Pods often reach the outside only through HTTP(S)_PROXY: the push must use it, as curl
    # and urllib do, with the proxy's credentials, and the metrics must arrive.
    root = tmp_path / "root"
    build(root)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("http_proxy", proxy.url.replace("http://", "http://ops:s%40cret@"))
        run = purge(root, pushgateway=pushgateway, push_label=("instance=via-proxy",))
    assert run.code == 0 and published(run) is True
    assert proxy.seen and all(
        method in ("PUT", "POST") and url.startswith(f"{pushgateway}/metrics/job/efspurge/")
        for method, url, _ in proxy.seen
    )
    assert proxy.seen and all(auth == "Basic b3BzOnNAY3JldA==" for _, _, auth in proxy.seen)
    group = {"job": "efspurge", "instance": "via-proxy", "dry_run": "false"}
    assert (
        value(scrape(pushgateway), "efspurge_last_run_files_deleted", **group)
        == (run.stats["files_purged"])
    )


def test_no_proxy_sends_the_push_straight_to_the_pushgateway(tmp_path, pushgateway, proxy):
    root = tmp_path / "root"
    build(root)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("http_proxy", proxy.url)
        env.setenv("no_proxy", "localhost,127.0.0.1")
        run = purge(root, pushgateway=pushgateway)
    assert run.code == 0 and published(run) is True
    assert proxy.seen == []


def test_an_https_pushgateway_is_reached_through_a_connect_tunnel(tmp_path, proxy):
    # The proxy refuses the tunnel (403): the push fails, and what it asked for is a CONNECT
    # to the Pushgateway's host and port, the credentials with it.
    make_file(tmp_path / "old", old=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("https_proxy", proxy.url.replace("http://", "http://ops:pw@"))
        run = purge(tmp_path, pushgateway="https://push.example.internal:9443")
    assert run.code == 0 and published(run) is False
    assert proxy.seen == [("CONNECT", "push.example.internal:9443", "Basic b3BzOnB3")]


def test_grouping_key():
    settings = Settings(path="/x", push_label=("instance=a",), shard_count=3, shard_index=1)
    assert metricsio.grouping_key(settings) == {"instance": "a", "dry_run": "false", "shard": "1"}
    assert metricsio.group_labels(settings)["job"] == "efspurge"


# --- the push deadline: real servers on loopback that misbehave --------------------------------


class SlowServer:
    """Accepts connections and reads the request; then either never answers (trickle=None)
    or sends a valid-looking response one byte every `trickle` seconds, forever."""

    def __init__(self, trickle: float | None):
        self.trickle = trickle
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1)
            try:
                conn.recv(65536)
                reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
                for byte in reply:
                    if self.stop.wait(self.trickle if self.trickle else 3600):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture(params=[None, 0.3], ids=["never-answers", "byte-every-0.3s"])
def slow_server(request):
    server = SlowServer(request.param)
    yield server
    server.close()


def test_a_push_has_one_total_deadline(tmp_path, slow_server, monkeypatch):
    monkeypatch.setattr(metrics, "PUSH_DEADLINE_SECONDS", 1.5)
    make_file(tmp_path / "old", old=True)
    started = time.monotonic()
    run = purge(tmp_path, pushgateway=slow_server.url)
    elapsed = time.monotonic() - started
    assert slow_server.accepted == 1
    assert run.code == 0 and published(run) is False
    errors = [r for r in run.log if r["message"] == "Could not push metrics to the Pushgateway"]
    assert "1.5 s" in errors[0]["extra_fields"]["error"]
    assert 1.5 <= elapsed < 1.5 + 5, elapsed
    assert not (tmp_path / "old").exists()


def test_a_progress_push_to_a_hanging_server_holds_nothing(tmp_path, slow_server):
    settings = Settings(path=str(tmp_path), pushgateway=slow_server.url, processes=1)
    started = time.monotonic()
    for _ in range(5):
        metrics.publish_progress({"files_scanned": 1}, settings)  # one in flight, four dropped
    assert time.monotonic() - started < 1
    # The final publish cuts the in-flight progress push short and then has its own deadline.
    metrics.PUSH_DEADLINE_SECONDS, saved = 1.0, metrics.PUSH_DEADLINE_SECONDS
    try:
        ok = metrics.publish({}, settings, 0, logging.getLogger("test"))
    finally:
        metrics.PUSH_DEADLINE_SECONDS = saved
    assert ok is False
    assert time.monotonic() - started < 1.0 + 2 + 3
    assert not metrics._progress.thread.is_alive()


def test_the_cli_push_deadline_with_a_byte_every_4_seconds(tmp_path):
    """The real default (10 s in total) against a server that sends a byte every 4 s: each
    read is well inside any socket timeout, yet the run ends about 10 s after it starts."""
    server = SlowServer(4.0)
    try:
        make_file(tmp_path / "root" / "old", old=True)
        started = time.monotonic()
        result = subprocess.run(
            [EFSPURGE, str(tmp_path / "root"), "--pushgateway", server.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["message"] == "Metrics not published"  # after the final record, as promised
    assert metrics.PUSH_DEADLINE_SECONDS <= elapsed < metrics.PUSH_DEADLINE_SECONDS + 8, elapsed


# --- the documented alert rules, evaluated by promtool -----------------------------------------


def documented_rules() -> dict:
    text = OBSERVABILITY.read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    rules = [yaml.safe_load(b) for b in blocks if "groups:" in b]
    assert len(rules) == 1, "docs/observability.md must hold exactly one rules block"
    return rules[0]


def as_input_series(found: dict, shift: float, instance: str) -> list[dict]:
    """The Pushgateway's series (as Prometheus scrapes them with honor_labels: true), as
    promtool input: one sample a minute (within the 5-minute lookback) for 30 hours.
    promtool's clock starts at 0, so every timestamp value is shifted by the same constant;
    the rules only compare differences of times."""
    out = []
    for (name, labels), v in sorted(found.items()):
        if not name.startswith("efspurge_") or dict(labels).get("instance") != instance:
            continue
        if name.endswith("_timestamp_seconds"):
            v -= shift
        selector = ",".join(f'{k}="{val}"' for k, val in labels)
        out.append({"series": f"{name}{{{selector}}}", "values": f"{v!r}+0x1800"})
    return out


def test_documented_alerts_over_a_dry_run_and_a_failed_run(tmp_path, pushgateway, monkeypatch):
    """Instance a: a successful purge, then a dry run, then a failed purge. Instance b: a dry
    run, then a failed purge, never a success. Both pushed to a real Pushgateway; the
    documented rules evaluated on what it holds."""
    root = tmp_path / "root"
    build(root)
    a = {"pushgateway": pushgateway, "push_label": ("instance=a",)}
    b = {"pushgateway": pushgateway, "push_label": ("instance=b",)}
    assert purge(root, **a).code == 0
    assert purge(root, dry_run=True, **a).code == 0
    assert purge(root, dry_run=True, **b).code == 0
    with monkeypatch.context() as m:
        fail_the_engine(m)
        make_file(root / "more-old", old=True)
        assert purge(root, **a).code == 3
        assert purge(root, **b).code == 3
    found = scrape(pushgateway)
    success_a = value(found, "efspurge_last_success_timestamp_seconds", instance="a",
                      dry_run="false")  # fmt: skip
    shift = math.floor(success_a)  # promtool time 0 = the real success of instance a
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(documented_rules()))
    failed = {"job": "efspurge", "dry_run": "false", "outcome": "failed", "severity": "warning"}
    stale = {"job": "efspurge", "instance": "a", "dry_run": "false", "severity": "warning"}
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": as_input_series(found, shift, "a"),
                "promql_expr_test": [
                    {  # the real run's success, not the dry run's, and not erased
                        "expr": 'efspurge_last_success_timestamp_seconds{dry_run="false"}',
                        "eval_time": "1h",
                        "exp_samples": [
                            {
                                "labels": "efspurge_last_success_timestamp_seconds"
                                '{dry_run="false",instance="a",job="efspurge"}',
                                "value": success_a - shift,
                            }
                        ],
                    }
                ],
                "alert_rule_test": [
                    {"eval_time": "25h", "alertname": "EfspurgeNoRecentSuccess", "exp_alerts": []},
                    {
                        "eval_time": "27h",
                        "alertname": "EfspurgeNoRecentSuccess",
                        "exp_alerts": [
                            {
                                "exp_labels": stale,
                                "exp_annotations": {
                                    "summary": "efspurge has not completed a purge for 26 hours"
                                    " (efspurge a)"
                                },
                            }
                        ],
                    },
                    {"eval_time": "27h", "alertname": "EfspurgeNeverSucceeded", "exp_alerts": []},
                    {
                        "eval_time": "1h",
                        "alertname": "EfspurgeLastRunFailed",
                        "exp_alerts": [
                            {
                                "exp_labels": {**failed, "instance": "a"},
                                "exp_annotations": {
                                    "summary": "the last efspurge run ended with failed"
                                    " (efspurge a)"
                                },
                            }
                        ],
                    },
                    {"eval_time": "1h", "alertname": "EfspurgeEntryErrors", "exp_alerts": []},
                    {"eval_time": "1h", "alertname": "EfspurgeStalled", "exp_alerts": []},
                ],
            },
            {
                "interval": "1m",
                "input_series": as_input_series(found, shift, "b"),
                "alert_rule_test": [
                    {"eval_time": "27h", "alertname": "EfspurgeNoRecentSuccess", "exp_alerts": []},
                    {
                        "eval_time": "27h",
                        "alertname": "EfspurgeNeverSucceeded",
                        "exp_alerts": [
                            {
                                "exp_labels": {"dry_run": "false", "severity": "warning"},
                                "exp_annotations": {
                                    "summary": "no efspurge purge has ever succeeded"
                                },
                            }
                        ],
                    },
                ],
            },
        ],
    }
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump(tests, width=1000))
    check = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    result = subprocess.run(
        ["promtool", "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_test_can_fail(tmp_path):
    """The promtool harness above is not vacuous: an expected alert that is not there fails."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(documented_rules()))
    tests = {
        "rule_files": [str(rules)],
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'efspurge_last_success_timestamp_seconds{dry_run="true"}',
                        "values": "0+0x1800",
                    }
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "27h",
                        "alertname": "EfspurgeNoRecentSuccess",
                        "exp_alerts": [{"exp_labels": {"dry_run": "true", "severity": "warning"}}],
                    }
                ],
            }
        ],
    }
    test_file = tmp_path / "t.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = subprocess.run(["promtool", "test", "rules", str(test_file)], capture_output=True)
    assert result.returncode != 0


def test_promtool_is_installed_by_the_test_script():
    assert shutil.which("promtool"), "promtool is missing: scripts/test.sh installs prometheus"
    assert "prometheus" in (REPO / "scripts" / "test.sh").read_text()
    assert os.access(shutil.which("promtool"), os.X_OK)
