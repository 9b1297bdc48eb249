"""Hardening (issue 10): bad input and odd states get a clear answer, and nothing is lost.

Every test runs the installed executable on a real tree and looks at the disk afterwards.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import (
    EFSPURGE,
    final,
    make_file,
    records,
    remove_tree,
    run_cli,
    snapshot,
    tmpfs_mount,
)

from efspurge.rootcheck import refusal_reason


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EFSPURGE_")}


def _run_in(cwd, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [EFSPURGE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**_env(), **(env or {})},
        timeout=120,
    )


# --- 1. an empty or blank PATH argument -----------------------------------------------------


@pytest.mark.parametrize("path", ["", " ", "\t", " \n"])
def test_empty_or_blank_path_argument_is_refused_and_nothing_changes(tmp_path, path):
    """`efspurge "$EFS_PATH"` with the variable unset must not purge the working directory."""
    make_file(tmp_path / "old.log", old=True)
    make_file(tmp_path / "sub/old.tmp", old=True)
    before = snapshot(tmp_path)
    result = _run_in(tmp_path, path, "--max-age-days", "0")
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PATH" in lines[0] and "empty" in lines[0], result.stderr
    assert result.stdout == ""
    assert snapshot(tmp_path) == before


# --- 2. well-known system directories as roots ----------------------------------------------

SYSTEM_ROOTS = ["/etc", "/usr", "/bin", "/sbin", "/lib", "/var/lib", "/etc/ssl", "/usr/local"]


@pytest.mark.parametrize("path", [p for p in SYSTEM_ROOTS if os.path.isdir(p)])
def test_system_directory_is_refused_as_root(path):
    result = run_cli(path, "--dry-run")
    assert result.returncode == 2, result.stdout[-300:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to purge" in lines[0] and "system directory" in lines[0]
    assert result.stdout == ""


def test_symlink_to_a_system_directory_is_refused(tmp_path):
    os.symlink("/etc", tmp_path / "conf")
    result = run_cli(str(tmp_path / "conf"), "--dry-run")
    assert result.returncode == 2
    assert "'/etc'" in result.stderr and "system directory" in result.stderr


@pytest.mark.skipif(not os.access("/var/lib", os.W_OK), reason="needs a writable /var/lib")
def test_application_state_directory_is_refused_and_nothing_is_deleted():
    state = Path(tempfile.mkdtemp(prefix="efspurge-test-", dir="/var/lib"))
    try:
        make_file(state / "db/table.dat", old=True)
        make_file(state / "old.log", old=True)
        before = snapshot(state)
        result = run_cli(str(state), "--max-age-days", "0")
        assert result.returncode == 2
        assert "state directory" in result.stderr and len(result.stderr.splitlines()) == 1
        assert snapshot(state) == before
        # One level further down is an application's own directory: allowed.
        result = run_cli(str(state / "db"), "--dry-run")
        assert result.returncode == 0, result.stderr
        assert final(result.stdout)["files_to_purge"] == 1
    finally:
        remove_tree(state)


@pytest.mark.parametrize("path", ["/tmp", "/var/tmp", "/dev/shm"])
def test_temporary_directories_stay_legitimate_roots(path):
    if not os.path.isdir(path):
        pytest.skip(f"no {path} here")
    with tempfile.TemporaryDirectory(dir=path) as tmp:
        make_file(Path(tmp) / "old", old=True)
        result = run_cli(tmp, "--dry-run")
        assert result.returncode == 0, result.stderr
        assert final(result.stdout)["files_to_purge"] == 1
    assert refusal_reason(path) is None


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ("/", True),
        ("/etc", True),
        ("/etc/", True),
        ("//etc", True),
        ("/etc/ssl/certs", True),
        ("/etcetera", False),
        ("/usr/local/lib", True),
        ("/lib64", True),
        ("/boot/efi", True),
        ("/home", True),
        ("/home/alice/.cache", False),
        ("/root", True),
        ("/root/.cache", False),
        ("/var", True),
        ("/var/log", False),
        ("/var/log/app", False),
        ("/var/lib", True),
        ("/var/lib/mysql", True),
        ("/var/lib/jenkins/workspace", False),
        ("/var/spool/cron/crontabs", True),
        ("/opt", True),
        ("/opt/app/cache", False),
        ("/mnt", False),
        ("/mnt/efs", False),
        ("/srv/data", False),
        ("/dev", True),
        ("/dev/shm", False),
        ("/run", True),
        ("/tmp", False),
        ("/var/tmp", False),
    ],
)
def test_refusal_list(path, refused):
    assert (refusal_reason(path) is not None) is refused


# --- 12. any error about the root is one line, exit 2 ---------------------------------------


def test_unreadable_magic_link_root_is_one_line_exit_2():
    """/proc/1/root: readlink is refused without ptrace rights over pid 1 (a raw traceback and
    exit 1 before); where it can be read it is '/', refused as the filesystem root."""
    result = run_cli("/proc/1/root", "--dry-run")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_proc_link_into_another_mount_namespace_is_refused(tmp_path):
    # /proc/PID/cwd of a process in its own mount namespace (a container) reads as a path
    # that, here, names another directory: the host's. It used to be resolved by its text and
    # the host's directory purged (found by review). Refused now; both directories untouched.
    host = tmp_path / "data"
    make_file(host / "host-file", old=True)
    inside = subprocess.Popen(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"mount -t tmpfs none {host} && cd {host} && touch -d '40 days ago' c-file "
            "&& echo ready && exec sleep 60",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert inside.stdout.readline().strip() == "ready"
        link = f"/proc/{inside.pid}/cwd"
        assert os.path.realpath(link) == str(host)  # the text: the host's directory
        result = run_cli(link, "--no-dry-run")
        assert os.listdir(link) == ["c-file"]
    finally:
        inside.kill()
        inside.wait()
    assert result.returncode == 2 and "another mount namespace" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert os.listdir(host) == ["host-file"]


# --- 4. odd timestamps in the manifest ------------------------------------------------------

YEAR_1_NS = -62_135_596_800 * 10**9
ODD_OLD = {
    "before-year-1": YEAR_1_NS - 10**8 * 10**9,  # about 3 years before year 1
    "negative": -1 * 10**9 - 1,  # 1969-12-31T23:59:58.999999999
    "year-1": YEAR_1_NS,
}
FAR_FUTURE = 10**8 * 86_400 * 10**9  # about year 275,000: young, kept


def _set_mtime_ns(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns))
    if os.stat(path).st_mtime_ns != ns:
        pytest.skip(f"this filesystem cannot store the timestamp {ns}")


@pytest.mark.parametrize("dry", [False, True], ids=["real", "dry-run"])
def test_odd_timestamps_are_data_and_every_deleted_file_is_in_the_manifest(tmp_path, dry):
    root = tmp_path / "root"
    for name, ns in ODD_OLD.items():
        make_file(root / name, old=True)
        _set_mtime_ns(root / name, ns)
    make_file(root / "future", old=False)
    _set_mtime_ns(root / "future", FAR_FUTURE)
    make_file(root / "plain", old=True)
    manifest = tmp_path / "m.jsonl"
    result = run_cli(str(root), "--manifest", str(manifest), *(["--dry-run"] if dry else []))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    stats = final(result.stdout)
    expected = {*ODD_OLD, "plain"}
    assert stats["files_purged" if not dry else "files_to_purge"] == len(expected)
    assert stats["manifest_lines"] == len(expected)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert {line["path"] for line in lines} == expected
    by_path = {line["path"]: line for line in lines}
    assert by_path["before-year-1"]["mtime"] == "-0003-10-31T14:13:20+00:00"
    assert by_path["before-year-1"]["mtime_ns"] == ODD_OLD["before-year-1"]
    assert by_path["negative"]["mtime"] == "1969-12-31T23:59:58.999999+00:00"
    assert by_path["year-1"]["mtime"] == "0001-01-01T00:00:00+00:00"
    assert "mtime_ns" not in by_path["negative"] and "mtime_ns" not in by_path["plain"]
    remaining = snapshot(root)
    assert remaining == (snapshot_of(expected | {"future"}) if dry else {"file:future"})


def snapshot_of(names) -> set[str]:
    return {f"file:{n}" for n in names}


def test_iso_utc_agrees_with_datetime_and_never_raises():
    from datetime import UTC, datetime, timedelta

    from efspurge.manifest import iso_utc

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for ns in (0, -1, 1_700_000_000_123_456_789, YEAR_1_NS, 253_402_300_799_999_999_999):
        seconds, below = divmod(ns, 10**9)
        expected = epoch + timedelta(seconds=seconds, microseconds=below // 1000)
        assert iso_utc(ns) == expected.isoformat()
    assert iso_utc(253_402_300_800 * 10**9) == "+10000-01-01T00:00:00+00:00"
    assert iso_utc(-(10**40)).startswith("-")
    assert iso_utc(10**40).startswith("+")


# --- 5. a manifest that cannot be written: no torn line, true counts ------------------------

MANIFEST_UNDER_FSIZE = r"""
import json, resource, signal, sys
from efspurge.manifest import Manifest, ManifestError, file_line
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
m = Manifest(sys.argv[1])
batch = 0
try:
    while True:
        m.write([file_line("delete", f"d{batch}/f{i}", i, 0) for i in range(7)])
        batch += 1
except ManifestError as exc:
    try:
        m.write([file_line("delete", "after", 0, 0)])
        later = "written"
    except ManifestError as again:
        later = [again.errno, len(again.unwritten)]
    print(json.dumps({"lines": m.lines, "errno": exc.errno, "unwritten": list(exc.unwritten),
                      "torn": exc.torn, "is_oserror": isinstance(exc, OSError),
                      "message": str(exc), "later": later}))
"""


@pytest.mark.parametrize("limit", [1000, 4096, 4099])
def test_manifest_write_past_a_size_limit_leaves_only_complete_lines(tmp_path, limit):
    """RLIMIT_FSIZE makes a real partial write followed by EFBIG, like a full disk."""
    path = tmp_path / "m.jsonl"
    result = subprocess.run(
        [sys.executable, "-c", MANIFEST_UNDER_FSIZE, str(path), str(limit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    data = path.read_bytes()
    assert data.endswith(b"\n")  # no torn line
    lines = data.decode().splitlines()
    for line in lines:
        json.loads(line)
    assert report["lines"] == len(lines)
    assert report["errno"] == errno.EFBIG and report["is_oserror"]
    assert report["torn"] is False
    # The batch that failed: what is in the file plus what is reported lost is all of it.
    assert (len(lines) % 7) + len(report["unwritten"]) == 7
    assert json.loads(report["unwritten"][-1])["path"].endswith("/f6")
    assert "not in the file" in report["message"]
    assert report["later"] == [errno.EFBIG, 1]  # once failed, it stays failed


@pytest.fixture
def full_tmpfs(tmp_path):
    """A real 16 KiB tmpfs: writes to it end with a partial write and ENOSPC."""
    with tmpfs_mount(tmp_path / "small", "size=16k") as mount_point:
        yield mount_point


def _old_files(root: Path, count: int) -> None:
    root.mkdir()
    for i in range(count):
        path = root / f"f{i:05d}"
        path.touch()
        os.utime(path, (0, 0))


def _full_manifest_run(tmp_path, full_tmpfs):
    root = tmp_path / "root"
    _old_files(root, 6000)
    manifest = full_tmpfs / "m.jsonl"
    result = run_cli(str(root), "--manifest", str(manifest), "--processes", "1")
    data = manifest.read_bytes()
    return root, result, data


def test_manifest_on_a_full_filesystem_has_no_torn_line_and_a_true_count(tmp_path, full_tmpfs):
    _root, result, data = _full_manifest_run(tmp_path, full_tmpfs)
    assert result.returncode != 0
    assert data.endswith(b"\n")
    lines = data.decode().splitlines()
    for line in lines:
        json.loads(line)
    assert final(result.stdout)["manifest_lines"] == len(lines)


def test_needs_engine_full_manifest_every_deleted_file_is_recorded(tmp_path, full_tmpfs):
    """Engine side of item 5: once the audit trail cannot be written, nothing more is
    deleted (the run stops, exit 3), and every file missing from the disk is in the manifest,
    or, for the one batch whose lines did not fit, in the log ("Unrecorded manifest line")."""
    root, result, data = _full_manifest_run(tmp_path, full_tmpfs)
    recorded = {json.loads(line)["path"] for line in data.decode().splitlines()}
    logged = {
        json.loads(r["extra_fields"]["line"])["path"]
        for r in records(result.stdout)
        if r["message"] == "Unrecorded manifest line"
    }
    missing = {f"f{i:05d}" for i in range(6000)} - {p.name for p in root.iterdir()}
    assert missing and missing <= recorded | logged
    assert not recorded & logged
    stats = final(result.stdout)
    assert stats["files_purged"] == len(missing) < 6000
    assert stats["stop_reason"] == "manifest write failed" and result.returncode == 3


# --- 8. a huge --max-age-days ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--max-age-days", "800000"], None, "--max-age-days"),
        (["--max-age-days", "1e300"], None, "--max-age-days"),
        (["--max-age-days", "100000.5"], None, "--max-age-days"),
        ([], {"EFSPURGE_MAX_AGE_DAYS": "3000000"}, "EFSPURGE_MAX_AGE_DAYS"),
    ],
)
def test_huge_max_age_is_a_usage_error_not_a_failed_purge(tmp_path, args, env, needle):
    """Exit 3 ("Purge failed") told a scheduler to retry; this is a configuration error."""
    make_file(tmp_path / "root/epoch", old=True)
    os.utime(tmp_path / "root/epoch", (0, 0))
    before = snapshot(tmp_path)
    result = run_cli(str(tmp_path / "root"), *args, env=env)
    assert result.returncode == 2, result.stdout[-500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "100000" in lines[0]
    assert snapshot(tmp_path) == before


def test_largest_max_age_runs_and_selects_nothing_recent(tmp_path):
    make_file(tmp_path / "root/epoch", old=True)
    os.utime(tmp_path / "root/epoch", (0, 0))
    result = run_cli(str(tmp_path / "root"), "--max-age-days", "100000")
    assert result.returncode == 0, result.stderr
    assert final(result.stdout)["files_purged"] == 0
    assert snapshot(tmp_path / "root") == {"file:epoch"}


def test_manifest_into_a_fifo(tmp_path):
    """--manifest /dev/stdout or a FIFO: no offsets to repair with, and fsync is EINVAL on a
    pipe (it made a successful run exit 3)."""
    root = tmp_path / "root"
    for i in range(3):
        make_file(root / f"old{i}", old=True)
    make_file(root / "young", old=False)
    fifo = tmp_path / "manifest.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [EFSPURGE, str(root), "--manifest", str(fifo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    with open(fifo) as reader:
        lines = [json.loads(line) for line in reader.read().splitlines()]
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err + out[-1000:]
    assert sorted(line["path"] for line in lines) == ["old0", "old1", "old2"]
    assert final(out)["manifest_lines"] == 3
    assert snapshot(root) == {"file:young"}


# --- 10. a signal before the engine's handlers are installed --------------------------------

EARLY_SIGNALS = r"""
import os, signal, sys
from efspurge import signals
signals.install_early()
assert signals.early_signal() is None
os.kill(os.getpid(), signal.SIGTERM)
assert signals.early_signal() == signal.SIGTERM, signals.early_signal()
os.kill(os.getpid(), signal.SIGINT)  # a second one: the user insists
print("survived a second signal")
"""


def test_early_signal_is_recorded_and_a_second_one_kills():
    result = subprocess.run(
        [sys.executable, "-c", EARLY_SIGNALS], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == -signal.SIGINT, result.stderr
    assert "survived" not in result.stdout


def _wait_until_blocked_opening_fifo(proc: subprocess.Popen) -> None:
    """Until the process sleeps in open() of a FIFO nobody reads: it is past the start of
    cli.main and before the engine (the manifest is opened before the engine starts)."""
    for _ in range(6000):
        assert proc.poll() is None, proc.communicate()
        with open(f"/proc/{proc.pid}/wchan") as f:
            if f.read() == "wait_for_partner":
                return
        time.sleep(0.01)
    raise AssertionError("the process never blocked on the FIFO")


@pytest.mark.parametrize("processes", ["1", "2"])
def test_needs_engine_sigterm_before_the_engine_starts_stops_the_run(tmp_path, processes):
    """A SIGTERM that lands before the engine installed its handlers stops the run like one
    that lands after: final record, interrupted, exit 143, nothing deleted. Before, the
    process died without a record. The manifest is a FIFO so that the process waits, between
    install_early() and the engine, until the test has sent the signal."""
    root = tmp_path / "root"
    for i in range(5):
        make_file(root / f"old{i}", old=True)
    before = snapshot(root)
    fifo = tmp_path / "manifest.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [EFSPURGE, str(root), "--manifest", str(fifo), "--processes", processes],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    _wait_until_blocked_opening_fifo(proc)
    proc.send_signal(signal.SIGTERM)
    with open(fifo) as reader:  # lets the run go on: it must now stop at once
        manifest_text = reader.read()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (proc.returncode, err)
    stats = final(out)
    assert stats["interrupted"] is True and stats["stop_reason"] == "SIGTERM"
    assert stats["files_purged"] == 0 and manifest_text == ""
    assert snapshot(root) == before


# --- 11. a closed stdout (efspurge ROOT | head -1) ------------------------------------------


def _run_and_close_stdout_after_one_line(root: Path, fmt: str = "json") -> tuple[int, str]:
    """`efspurge ROOT --log-level DEBUG | head -1`: every deletion is logged, so the writes
    into the closed pipe start long before the run could end (the pipe holds 64 KiB)."""
    proc = subprocess.Popen(
        [EFSPURGE, str(root), "--log-level", "DEBUG", "--log-format", fmt],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert b"Starting purge operation" in first
    proc.stdout.close()
    err = proc.stderr.read().decode()
    return proc.wait(timeout=120), err


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_closed_stdout_prints_no_traceback(tmp_path, fmt):
    root = tmp_path / "root"
    _old_files(root, 5000)
    _code, err = _run_and_close_stdout_after_one_line(root, fmt)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err[:2000]
    assert err == ""


def test_needs_engine_closed_stdout_stops_the_run_with_141(tmp_path):
    """Decision (as SIGPIPE would, like find -delete | head): nobody reads the records any
    more, so the run stops cleanly, exit 141. Before, it went on deleting to the end."""
    root = tmp_path / "root"
    _old_files(root, 5000)
    code, err = _run_and_close_stdout_after_one_line(root)
    assert code == 141, err
    assert 0 < len(list(root.iterdir())) < 5000  # stopped: some old files are still there


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_an_output_that_cannot_be_written_stops_the_run_before_it_deletes(tmp_path, fmt):
    """`efspurge ROOT > run.log` on a full disk: before, every record printed a traceback
    on stderr, the run deleted everything, and it exited 0 without a final record (found by
    review). Now the first failed record stops the run: one line on stderr, exit 3, and
    since the start record is the first, nothing is deleted."""
    root = tmp_path / "root"
    _old_files(root, 2000)
    before = snapshot(root)
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [EFSPURGE, str(root), "--max-age-days", "30", "--log-format", fmt],
            stdout=full, stderr=subprocess.PIPE, text=True, env=_env(), timeout=120,
        )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("\n") == 1 and "cannot write the log" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(root) == before


def test_a_non_blocking_stdout_loses_no_record(tmp_path):
    """Some supervisors start a process with its stdout pipe non-blocking: every write while
    the reader lags failed with EAGAIN and its record was lost in silence, the final one too
    (285 of 3,002 lines arrived, exit 0). efspurge makes its stdout blocking: all arrive."""
    root = tmp_path / "root"
    _old_files(root, 3000)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    proc = subprocess.Popen(
        [EFSPURGE, str(root), "--max-age-days", "30", "--log-level", "DEBUG"],
        stdout=write_end, stderr=subprocess.PIPE, env=_env(),
    )  # fmt: skip
    time.sleep(1.0)  # the reader lags: the pipe (64 KiB) fills long before the run ends
    os.set_blocking(read_end, False)  # our write end stays open: no end of file to wait for
    out, exited = b"", False
    while True:
        try:
            out += os.read(read_end, 1 << 16)
        except BlockingIOError:
            if exited:
                break  # the run is over and the pipe drained
            exited = proc.poll() is not None
            time.sleep(0.01)
    os.close(read_end)
    assert proc.wait(timeout=120) == 0
    assert not os.get_blocking(write_end)  # the flag, shared with our end, is given back
    os.close(write_end)
    lines = [json.loads(line) for line in out.splitlines()]
    assert sum(r["message"] == "Deleted file" for r in lines) == 3000
    assert lines[-1]["message"] == "Purge operation completed"
    assert list(root.iterdir()) == []


# --- 17. every JSON line parses with a strict parser ----------------------------------------


def _strict_json(line: bytes):
    """What a strict parser accepts: UTF-8 text, and no lone surrogate in any string (which
    Python's json.loads lets through as \\udcXX, and Go, Rust or jq reject)."""
    value = json.loads(line.decode("utf-8", "strict"))

    def check(item):
        if isinstance(item, str):
            item.encode("utf-8", "strict")
        elif isinstance(item, dict):
            for key, sub in item.items():
                check(key)
                check(sub)
        elif isinstance(item, list):
            for sub in item:
                check(sub)

    check(value)
    return value


@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "real"])
def test_non_utf8_names_give_strict_json_with_recoverable_bytes(tmp_path, dry):
    root = tmp_path / "root"
    root.mkdir()
    names = [b"caf\xe9.log", b"\xff\xfe", b"ok.log"]
    for name in names:
        path = os.path.join(os.fsencode(root), name)
        with open(path, "wb"):
            pass
        os.utime(path, (0, 0))
    subdir = os.path.join(os.fsencode(root), b"dir\x80")
    os.mkdir(subdir)
    young = os.path.join(subdir, b"young\x81")
    with open(young, "wb"):
        pass
    result = subprocess.run(
        [EFSPURGE, str(root), "--log-level", "DEBUG", *(["--dry-run"] if dry else [])],
        capture_output=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = [_strict_json(line) for line in result.stdout.splitlines()]
    action = "Would delete file" if dry else "Deleted file"
    deleted = [r["extra_fields"] for r in records if r["message"] == action]
    recovered = {
        base64.b64decode(f["path_b64"]) if "path_b64" in f else os.fsencode(f["path"])
        for f in deleted
    }
    assert recovered == {os.path.join(os.fsencode(root), n) for n in names}
    assert any(f.get("path", "").endswith("caf\\xe9.log") for f in deleted)
    kept = [r["extra_fields"] for r in records if r["message"] == "Kept"]
    assert any(base64.b64decode(f["path_b64"]) == young for f in kept if "path_b64" in f)
    remaining = set(os.listdir(os.fsencode(root)))
    assert remaining == ({*names, b"dir\x80"} if dry else {b"dir\x80"})
    assert os.listdir(subdir) == [b"young\x81"]


# --- 13. a misspelled EFSPURGE_ variable ----------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("EFSPURGE_DRYRUN", "EFSPURGE_DRY_RUN"),
        ("EFSPURGE_MAX_AGE", "EFSPURGE_MAX_AGE_DAYS"),
        ("EFSPURGE_EXCLUDE_DIRS", "EFSPURGE_EXCLUDE_DIR"),
        ("EFSPURGE_NONSENSE", None),
    ],
)
def test_unknown_variable_is_an_error_and_nothing_is_deleted(tmp_path, variable, closest):
    make_file(tmp_path / "root/old.log", old=True)
    before = snapshot(tmp_path)
    result = run_cli(str(tmp_path / "root"), env={variable: "1"})
    assert result.returncode == 2, result.stdout[-500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"efspurge: error: {variable}")
    assert "unknown variable" in lines[0]
    if closest:
        assert f"did you mean {closest}?" in lines[0]
    else:
        assert "did you mean" not in lines[0]
    assert snapshot(tmp_path) == before


def test_kubernetes_service_links_are_not_taken_for_options(tmp_path):
    # A Service named efspurge or efspurge-pushgateway in the namespace puts these into every
    # pod (enableServiceLinks defaults to true); they failed every run with exit 2 (found by
    # review). A misspelled option next to them is still refused.
    make_file(tmp_path / "root/old.log", old=True)
    links = {
        "EFSPURGE_SERVICE_HOST": "10.96.0.12",
        "EFSPURGE_SERVICE_PORT": "9091",
        "EFSPURGE_PORT": "tcp://10.96.0.12:9091",
        "EFSPURGE_PORT_9091_TCP_ADDR": "10.96.0.12",
        "EFSPURGE_PUSHGATEWAY_SERVICE_HOST": "10.96.0.13",
        "EFSPURGE_PUSHGATEWAY_SERVICE_PORT_HTTP": "9091",
        "EFSPURGE_PUSHGATEWAY_PORT_9091_TCP": "tcp://10.96.0.13:9091",
        "EFSPURGE_PUSHGATEWAY_PORT_9091_TCP_PROTO": "tcp",
    }
    result = run_cli(str(tmp_path / "root"), env=links)
    assert result.returncode == 0, result.stderr
    assert final(result.stdout)["files_purged"] == 1
    assert snapshot(tmp_path) == {"dir:root"}
    result = run_cli(str(tmp_path / "root"), env={**links, "EFSPURGE_DRYRUN": "1"})
    assert result.returncode == 2 and "EFSPURGE_DRYRUN" in result.stderr


def test_known_non_option_variables_are_accepted(tmp_path):
    make_file(tmp_path / "root/old.log", old=True)
    env = {"EFSPURGE_PATH": str(tmp_path / "root"), "EFSPURGE_TEST_VENV": ".venv-test"}
    result = run_cli("--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert final(result.stdout)["files_to_purge"] == 1


# --- 19. a Pushgateway URL that can never work is refused before the run ---------------------

BAD_URLS = [
    "http://a b",
    "http://host:99999",
    "http://host:abc",
    "http://:9091",
    "http://",
    "http://[::1",
    "http://host:9091/x?y=1",
    "http://host#frag",
    "ftp://host",
    "pushgateway:9091",
]


@pytest.mark.parametrize("url", ["http://a b", "http://host:99999", "http://[::1"])
def test_bad_pushgateway_url_is_refused_before_anything_is_deleted(tmp_path, url):
    make_file(tmp_path / "root/old.log", old=True)
    before = snapshot(tmp_path)
    result = run_cli(str(tmp_path / "root"), "--pushgateway", url)
    assert result.returncode == 2, result.stdout[-500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--pushgateway" in lines[0]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("url", BAD_URLS)
def test_parse_url_refuses(url):
    from efspurge.settings import parse_url

    with pytest.raises(ValueError, match="expected an http"):
        parse_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://pushgateway:9091", "https://pg.example.com/prefix", "http://[::1]:9091", "http://h/"],
)
def test_parse_url_accepts(url):
    from efspurge.settings import parse_url

    assert parse_url(url) == url


# --- 18. the documented [[] idiom prints no warning ----------------------------------------


def test_bracket_idiom_matches_a_literal_bracket_without_a_warning(tmp_path):
    root = tmp_path / "root"
    make_file(root / "[keep].log", old=True)
    make_file(root / "]x.log", old=True)
    make_file(root / "other.log", old=True)
    result = run_cli(str(root), "--exclude", "[[]keep].log", "--exclude", "[]]x.log")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # was: FutureWarning: Possible nested set
    assert snapshot(root) == {"file:[keep].log", "file:]x.log"}


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("[[]a]", "[a]", "a]"),
        ("[]]", "]", "a"),
        ("[!]]", "a", "]"),
        ("[!a-c]", "d", "b"),
        ("[a&&b]", "&", "c"),
        ("[~~]", "~", "a"),
        ("[a||b]", "|", "c"),
        ("[a-]", "-", "b"),
        ("[\\]", "\\", "a"),
    ],
)
def test_bracket_sets_are_literal_inside_without_warnings(pattern, matching, not_matching):
    import re
    import warnings

    from efspurge.selection import translate

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled = re.compile(translate(pattern))
    assert compiled.match(matching) and not compiled.match(not_matching)


# --- 15. the spellings people write for --exclude-dir ---------------------------------------


def _keep_tree(root: Path) -> None:
    make_file(root / "keep/old.log", old=True)
    make_file(root / "keep/sub/old.log", old=True)
    make_file(root / "other/old.log", old=True)
    make_file(root / "other/keep/old.log", old=True)


@pytest.mark.parametrize(
    ("spelling", "kept"),
    [
        ("keep/", {"keep", "other/keep"}),  # a name at any depth, as "keep" is
        ("keep//", {"keep", "other/keep"}),
        ("./keep", {"keep"}),  # PATH's own keep, as "/keep" is
        ("{root}/keep", {"keep"}),
        ("{root}/keep/", {"keep"}),
        ("{root}/other/keep", {"other/keep"}),
    ],
)
def test_exclude_dir_spellings_keep_the_directory(tmp_path, spelling, kept):
    root = tmp_path / "root"
    _keep_tree(root)
    result = run_cli(str(root), "--exclude-dir", spelling.format(root=root))
    assert result.returncode == 0, result.stderr
    expected = {f"file:{d}/old.log" for d in kept}
    if "keep" in kept:
        expected.add("file:keep/sub/old.log")
    files = {p for p in snapshot(root) if p.startswith("file:")}
    assert files == expected


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--exclude-dir", "/somewhere/else/keep"], "absolute path outside PATH"),
        (["--exclude-dir", "../keep"], "never matches"),
        (["--exclude", "keep/"], "--exclude-dir 'keep'"),
        (["--exclude-dir", "{root}"], "PATH itself"),
    ],
)
def test_pattern_that_can_never_match_is_refused_with_how_to_write_it(tmp_path, args, needle):
    root = tmp_path / "root"
    _keep_tree(root)
    before = snapshot(root)
    result = run_cli(str(root), *[a.format(root=root) for a in args])
    assert result.returncode == 2, result.stdout[-500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and args[0] in lines[0] and needle in lines[0], result.stderr
    assert snapshot(root) == before


@pytest.mark.parametrize("written", ["link/..", "{real}/keep"])
def test_absolute_patterns_name_the_directory_the_walk_reads(tmp_path, written):
    # PATH 'link/..', where link points into the tree: the walk is of the link target's
    # parent (the real tree), though the text says tmp_path. An absolute --exclude-dir under
    # the real tree was read against the text, matched nothing, and its files were purged
    # (found by review). And a root reached through a symlink accepts the resolved spelling.
    real = tmp_path / "real"
    _keep_tree(real)
    (real / "sub").mkdir()
    os.symlink(real / "sub", tmp_path / "link")
    (tmp_path / "alias").symlink_to(real)
    root = tmp_path / "link" / ".." if written == "link/.." else tmp_path / "alias"
    result = run_cli(str(root), "--exclude-dir", f"{real}/keep")
    assert result.returncode == 0, result.stderr
    files = {p for p in snapshot(real) if p.startswith("file:")}
    assert files == {"file:keep/old.log", "file:keep/sub/old.log"}


def test_pattern_spellings_from_the_environment_too(tmp_path):
    root = tmp_path / "root"
    _keep_tree(root)
    result = run_cli(str(root), env={"EFSPURGE_EXCLUDE_DIR": f"./keep/,{root}/other/keep"})
    assert result.returncode == 0, result.stderr
    files = {p for p in snapshot(root) if p.startswith("file:")}
    assert files == {"file:keep/old.log", "file:keep/sub/old.log", "file:other/keep/old.log"}


@pytest.mark.parametrize("dry_run", [True, False])
def test_an_exclude_that_names_a_directory_is_said_once(tmp_path, dry_run):
    # `--exclude keep` keeps files named keep; a directory named keep is walked and purged,
    # as documented, but rsync and tar users expect it kept: said once, at WARNING, in the
    # dry run too (found by review). No warning for the files it does keep.
    make_file(tmp_path / "keep" / "a", old=True)
    make_file(tmp_path / "keep" / "sub" / "keep" / "b", old=True)
    make_file(tmp_path / "other" / "keep", old=True)
    before = snapshot(tmp_path)
    result = run_cli(str(tmp_path), "--exclude", "keep", *(["--dry-run"] if dry_run else []))
    assert result.returncode == 0, result.stderr
    warnings = [r for r in records(result.stdout) if r["level"] == "WARNING"]
    assert len(warnings) == 1 and "use --exclude-dir" in warnings[0]["message"]
    assert warnings[0]["extra_fields"]["path"].endswith("/keep")
    files = {p for p in snapshot(tmp_path) if p.startswith("file:")}
    if dry_run:
        assert snapshot(tmp_path) == before
    else:
        assert files == {"file:other/keep"}


# --- --memory-limit-mb 0 means no limit (as in the reference) ------------------------------


def test_memory_limit_zero_is_accepted_and_the_run_purges(tmp_path):
    root = tmp_path / "root"
    make_file(root / "a/old.log", old=True)
    make_file(root / "young.log", old=False)
    result = run_cli(str(root), "--memory-limit-mb", "0")
    assert result.returncode == 0, result.stderr  # was: exit 2, "must be at least 1"
    assert final(result.stdout)["files_purged"] == 1
    assert {p for p in snapshot(root) if p.startswith("file:")} == {"file:young.log"}


def test_needs_engine_memory_limit_zero_never_pauses(tmp_path):
    root = tmp_path / "root"
    make_file(root / "a/old.log", old=True)
    result = run_cli(str(root), "--memory-limit-mb", "0", env={"EFSPURGE_PROCESSES": "1"})
    stats = final(result.stdout)
    assert stats["memory_backpressure_events"] == 0
    assert not [r for r in records(result.stdout) if r["level"] == "WARNING"]


# --- the memory guard: over the limit, discovery pauses and the run still ends right -------


def _guard_tree(root: Path) -> set[str]:
    """Nested directories of old and young files; returns what a purge must leave."""
    left = set()
    for d in range(6):
        for s in range(4):
            for f in range(15):
                make_file(root / f"d{d}/s{s}/old{f}.log", old=True)
                young = make_file(root / f"d{d}/s{s}/new{f}.log", old=False)
                left.add("file:" + str(young.relative_to(root)))
            left.add(f"dir:d{d}/s{s}")
        left.add(f"dir:d{d}")
    return left


@pytest.mark.parametrize(
    "args",
    [[], ["--processes", "1"], ["--processes", "1", "--io-threads", "4"]],
    ids=["defaults", "one-process", "threads"],
)
def test_memory_guard_over_the_limit_pauses_discovery_and_deletes_the_same(tmp_path, args):
    # Every process is bigger than 1 MB, so the guard's first sample is over the limit: it
    # pauses discovery for the whole run. The walk must still finish (listing goes on one
    # step at a time when nothing else runs) and delete exactly what a run without a limit
    # deletes.
    root = tmp_path / "root"
    expected = _guard_tree(root)
    # Batches of one entry: a run long enough for several progress records.
    slow = ["--task-batch-size", "1", "--progress-interval", "0.01"]
    result = run_cli(str(root), "--memory-limit-mb", "1", *slow, *args, timeout=120)
    assert result.returncode == 0, result.stderr
    assert snapshot(root) == expected
    stats = final(result.stdout)
    assert stats["files_purged"] == 360 and stats["errors"] == 0
    assert stats["memory_backpressure_events"] >= 1
    lines = records(result.stdout)
    warnings = [r for r in lines if r["message"].startswith("Memory over the limit")]
    assert warnings and warnings[0]["level"] == "WARNING"
    assert warnings[0]["extra_fields"]["limit_mb"] == 1
    assert warnings[0]["extra_fields"]["rss_mb"] > 1
    progress = [r["extra_fields"] for r in lines if r["message"] == "Progress"]
    assert progress and all(p["discovery_paused"] for p in progress)


def test_memory_guard_under_the_limit_never_pauses(tmp_path):
    root = tmp_path / "root"
    expected = _guard_tree(root)
    slow = ["--task-batch-size", "1", "--progress-interval", "0.01"]
    result = run_cli(str(root), "--memory-limit-mb", "4096", *slow)
    assert result.returncode == 0, result.stderr
    assert snapshot(root) == expected
    assert final(result.stdout)["memory_backpressure_events"] == 0
    progress = [r["extra_fields"] for r in records(result.stdout) if r["message"] == "Progress"]
    assert not any(p["discovery_paused"] for p in progress)
