"""The installed ``efspurge`` executable, run as a user runs it."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys

import pytest
from conftest import (
    EFSPURGE,
    act_mid_run,
    age_dirs,
    final,
    make_file,
    records,
    run_cli,
    snapshot,
)

from efspurge import __version__

DOCUMENTED_KEYS = {
    "files_scanned",
    "files_to_purge",
    "files_purged",
    "dirs_scanned",
    "empty_dirs_deleted",
    "symlinks_skipped",
    "errors",
    "bytes_freed",
    "duration_seconds",
    "files_per_second",
    "mb_freed",
}
EXTRA_KEYS = {"dry_run", "interrupted", "peak_memory_mb", "memory_backpressure_events"}


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    make_file(root / "old.log", old=True, size=2048)
    make_file(root / "sub/old.tmp", old=True, size=1024)
    make_file(root / "sub/new.tmp", old=False)
    (root / "empty").mkdir()
    return root


def test_help_lists_every_option_and_variable():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in (
        "--max-age-days",
        "--max-concurrency",
        "--memory-limit-mb",
        "--task-batch-size",
        "--dry-run",
        "--remove-empty-dirs",
        "--max-empty-dirs-to-delete",
        "--log-level",
        "--version",
        "EFSPURGE_MAX_EMPTY_DIRS_TO_DELETE",
        "EFSPURGE_REMOVE_EMPTY_DIRS",
    ):
        assert flag in result.stdout


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"efspurge {__version__}"
    module = subprocess.run(
        [sys.executable, "-m", "efspurge", "--version"], capture_output=True, text=True
    )
    assert module.stdout.strip() == f"efspurge {__version__}"


def test_real_run_records_and_exit_code(tree):
    age_dirs(tree)
    result = run_cli(str(tree), "--remove-empty-dirs")
    assert result.returncode == 0, result.stderr
    lines = records(result.stdout)
    for line in lines:
        assert set(line) == {"timestamp", "level", "message", "logger", "extra_fields"}
        assert line["logger"] == "efspurge"
    assert lines[0]["message"] == "Starting purge operation"
    assert lines[0]["extra_fields"]["max_age_days"] == 30.0
    stats = final(result.stdout)
    assert set(stats) >= DOCUMENTED_KEYS | EXTRA_KEYS
    assert stats["files_purged"] == 2 and stats["bytes_freed"] == 3072
    assert stats["empty_dirs_deleted"] == 1
    assert stats["dry_run"] is False and stats["interrupted"] is False
    assert stats["peak_memory_mb"] > 5
    assert snapshot(tree) == {"dir:sub", "file:sub/new.tmp"}


def test_dry_run_by_environment(tree):
    before = snapshot(tree)
    result = run_cli(str(tree), env={"EFSPURGE_DRY_RUN": "true"})
    assert result.returncode == 0
    assert final(result.stdout)["files_to_purge"] == 2
    assert final(result.stdout)["dry_run"] is True
    assert snapshot(tree) == before


def test_no_dry_run_flag_overrides_environment(tree):
    result = run_cli(str(tree), "--no-dry-run", env={"EFSPURGE_DRY_RUN": "1"})
    assert final(result.stdout)["files_purged"] == 2


def test_path_from_environment(tree):
    result = run_cli(env={"EFSPURGE_PATH": str(tree), "EFSPURGE_DRY_RUN": "1"})
    assert result.returncode == 0
    assert final(result.stdout)["files_to_purge"] == 2


def test_log_level_filters_but_the_final_record_stays(tree):
    result = run_cli(str(tree), "--dry-run", "--log-level", "WARNING")
    lines = records(result.stdout)
    assert [r["message"] for r in lines] == ["Purge operation completed"]


def test_debug_level_says_why_files_were_kept(tree):
    result = run_cli(str(tree), "--dry-run", "--log-level", "DEBUG")
    kept = [r for r in records(result.stdout) if r["message"] == "Kept"]
    [new] = [r for r in kept if r["extra_fields"]["path"].endswith("sub/new.tmp")]
    # Readable times (UTC), as well as the nanoseconds compared.
    mtime = os.stat(tree / "sub/new.tmp").st_mtime_ns
    stamp = datetime.datetime.fromtimestamp(mtime // 10**9, datetime.UTC)
    assert new["extra_fields"]["reason"].startswith(
        f"mtime {stamp:%Y-%m-%dT%H:%M:%S}.{mtime % 10**9 // 1000:06d}Z ({mtime} ns) is not older "
        "than the cutoff 20"
    )
    would = [r for r in records(result.stdout) if r["message"] == "Would delete file"]
    assert len(would) == 2
    assert all(r["extra_fields"]["mtime"].endswith("Z") for r in would)


def test_an_option_that_has_no_effect_is_said_at_start(tree):
    # --keep-empty-dirs-newer-than without --remove-empty-dirs, a push label without
    # metrics: accepted in silence before, which hid a mistake (found by a new-user review).
    result = run_cli(
        str(tree), "--dry-run", "--keep-empty-dirs-newer-than", "2h", "--push-label", "a=b",
        "--max-empty-dirs-to-delete", "5",
    )  # fmt: skip
    assert result.returncode == 0
    warned = [r["message"] for r in records(result.stdout) if r["level"] == "WARNING"]
    assert warned == [
        "--keep-empty-dirs-newer-than has no effect without --remove-empty-dirs",
        "--max-empty-dirs-to-delete has no effect without --remove-empty-dirs",
        "--push-label has no effect without --metrics-file or --pushgateway",
    ]
    used = run_cli(str(tree), "--dry-run", "--remove-empty-dirs", "--max-empty-dirs-to-delete", "5")
    assert not [r for r in records(used.stdout) if r["level"] == "WARNING"]


def _bad(args, env=None):
    return run_cli(*args, env=env)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--max-age-days", "-1"], None, "--max-age-days"),
        (["--max-age-days", "nan"], None, "--max-age-days"),
        (["--max-age-days", "inf"], None, "--max-age-days"),
        (["--max-age-days", "abc"], None, "--max-age-days"),
        (["--max-concurrency", "0"], None, "--max-concurrency"),
        (["--memory-limit-mb", "-1"], None, "--memory-limit-mb"),
        (["--task-batch-size", "0"], None, "--task-batch-size"),
        (["--max-empty-dirs-to-delete", "-1"], None, "--max-empty-dirs-to-delete"),
        (["--log-level", "LOUD"], None, "--log-level"),
        # Each process is a fork of the walk: a typo must not take the machine down.
        (["--processes", "100000"], None, "--processes: must be 'auto' or between 1 and 64"),
        (["--processes", "99999999999999999999"], None, "--processes"),
        (["--io-threads", "5000"], None, "--io-threads: must be 'auto' or between 1 and 1024"),
        # A value that starts with '-' gets its option's own message, not "expected one
        # argument".
        (["--max-runtime", "-5m"], None, "--max-runtime: must not be negative, got '-5m'"),
        (["--max-age-days", "-inf"], None, "--max-age-days: must be a finite number"),
        (["--keep-empty-dirs-newer-than", "-1h"], None, "newer-than: must not be negative"),
        # Written only at the end: a path that can never be written is refused up front.
        (["--metrics-file", "/"], None, "--metrics-file: cannot write '/': it is a directory"),
        (["--metrics-file", "/no/such/dir/m.prom"], None, "--metrics-file: cannot write"),
        # Written only at the end, named as the user gave it.
        ([], {"EFSPURGE_METRICS_FILE": "/"}, "EFSPURGE_METRICS_FILE: cannot write '/'"),
        ([], {"EFSPURGE_MANIFEST": "/"}, "EFSPURGE_MANIFEST: cannot write '/'"),
        (["--manifest", "/"], None, "--manifest: cannot write '/'"),
        # '1h1h' or '30m1h': a typo more likely than a sum.
        (["--max-runtime", "1h1h"], None, "--max-runtime: each unit once, largest first"),
        (["--max-runtime", "30m1h"], None, "--max-runtime: each unit once, largest first"),
        ([], {"EFSPURGE_MAX_AGE_DAYS": "soon"}, "EFSPURGE_MAX_AGE_DAYS"),
        # A shard index out of range, named where it came from.
        (["--shard-count", "4"], {"JOB_COMPLETION_INDEX": "7"}, "JOB_COMPLETION_INDEX: must be"),
        ([], {"EFSPURGE_SHARD_INDEX": "1"}, "EFSPURGE_SHARD_INDEX: must be between 0 and 0"),
        ([], {"EFSPURGE_REMOVE_EMPTY_DIRS": "perhaps"}, "EFSPURGE_REMOVE_EMPTY_DIRS"),
        ([], {"EFSPURGE_MAX_CONCURRENCY": "-3"}, "EFSPURGE_MAX_CONCURRENCY"),
        ([], {"EFSPURGE_LOG_LEVEL": "chatty"}, "EFSPURGE_LOG_LEVEL"),
        # A bad variable is refused even where its flag overrides it.
        (["--max-delete", "5"], {"EFSPURGE_MAX_DELETE": "five"}, "EFSPURGE_MAX_DELETE"),
    ],
)
def test_bad_input_is_one_clear_line_exit_2_and_nothing_changes(tree, args, env, needle):
    before = snapshot(tree)
    result = run_cli(str(tree), *args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert result.stdout == ""
    assert snapshot(tree) == before


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["--no-such-flag"], ""),
        (["--dryrun"], " (did you mean --dry-run?)"),
        (["--max-age", "0"], " (did you mean --max-age-days?)"),  # abbreviations are off
        (["--dry"], " (did you mean --dry-run?)"),
        # A real flag after "--" is a path: say why, not "did you mean" itself.
        (["--", "--dry-run"], " (--dry-run comes after '--', which ends the options)"),
    ],
)
def test_unknown_flag_is_one_line_with_a_help_hint_and_nothing_changes(tree, args, suggestion):
    before = snapshot(tree)
    result = run_cli(str(tree), *args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    unknown = args[-1] if args[0] == "--" else args[0]
    assert lines[0].startswith(f"efspurge: error: unrecognized arguments: {unknown}")
    assert lines[0].endswith(f"{suggestion}; see 'efspurge --help'")
    assert result.stdout == ""
    assert snapshot(tree) == before


def test_missing_root(tmp_path):
    result = run_cli(str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and len(result.stderr.splitlines()) == 1


def test_root_is_a_regular_file(tmp_path):
    make_file(tmp_path / "file", old=True)
    result = run_cli(str(tmp_path / "file"))
    assert result.returncode == 2 and "is not a directory" in result.stderr
    assert (tmp_path / "file").exists()


def test_filesystem_root_is_refused(tmp_path):
    result = run_cli("/", "--dry-run")
    assert result.returncode == 2 and "filesystem root" in result.stderr
    os.symlink("/", tmp_path / "slash")
    result = run_cli(str(tmp_path / "slash"), "--dry-run")
    assert result.returncode == 2 and "filesystem root" in result.stderr


@pytest.mark.parametrize(
    ("path", "fstype"), [("/proc", "proc"), ("/sys", "sysfs"), ("/dev/pts", "devpts")]
)
def test_pseudo_filesystems_are_refused_by_type(path, fstype):
    from efspurge import mounts

    actual = mounts.filesystem_type(path, os.stat(path).st_dev)
    if actual != fstype:
        pytest.skip(f"{path} is {actual} on this machine, not {fstype}")
    result = run_cli(path, "--dry-run")
    assert result.returncode == 2
    assert fstype in result.stderr and "pseudo-filesystem" in result.stderr


def test_tmpfs_root_like_dev_shm_is_accepted():
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        make_file(__import__("pathlib").Path(tmp) / "old", old=True)
        result = run_cli(tmp, "--dry-run")
        assert result.returncode == 0, result.stderr
        assert final(result.stdout)["files_to_purge"] == 1


def _slow_tree(root, n=40_000):
    root.mkdir()
    for d in range(40):
        sub = root / f"d{d}"
        sub.mkdir()
        for i in range(n // 40):
            p = sub / f"f{i}"
            p.touch()
            if i % 2 == 0:
                os.utime(p, (0, 0))


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)]
)
def test_signal_mid_run_stops_cleanly_with_final_record(tmp_path, signum, code):
    root = tmp_path / "root"
    _slow_tree(root)
    young = {p for p in snapshot(root) if p.startswith("file:") and int(p.rsplit("f", 1)[1]) % 2}
    returncode, out = act_mid_run([str(root)], lambda proc: proc.send_signal(signum))
    assert returncode == code
    stats = final(out)
    assert stats["interrupted"] is True
    assert stats["stop_reason"] == signal.Signals(signum).name
    remaining = snapshot(root)
    assert young <= remaining  # no young file was touched
    deleted = (
        20_000 - len([p for p in remaining if p.startswith("file:")]) + len(young) - len(young)
    )
    assert stats["files_purged"] == 40_000 - len([p for p in remaining if p.startswith("file:")])
    assert 0 < stats["files_purged"] < 20_000, deleted  # stopped mid-way
    # The next run continues where this one stopped.
    again = run_cli(str(root))
    assert again.returncode == 0
    assert {p for p in snapshot(root) if p.startswith("file:")} == young


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT])
def test_a_signal_ignored_at_start_does_not_stop_the_run(tmp_path, signum):
    # nohup ignores SIGHUP: the run is to outlive the terminal. A shell script's background
    # job starts with SIGINT ignored: a Ctrl-C meant for the script is not for it. Both go
    # on (found by review); the workers ignore them too.
    root = tmp_path / "root"
    _slow_tree(root)
    young = {p for p in snapshot(root) if p.startswith("file:") and int(p.rsplit("f", 1)[1]) % 2}

    def ignored() -> None:
        signal.signal(signum, signal.SIG_IGN)

    def send(proc) -> None:
        proc.send_signal(signum)

    returncode, out = act_mid_run([str(root), "--processes", "2"], send, preexec_fn=ignored)
    assert returncode == 0
    stats = final(out)
    assert stats["interrupted"] is False and stats["files_purged"] == 20_000
    assert {p for p in snapshot(root) if p.startswith("file:")} == young


def test_a_pattern_that_starts_with_a_dash_is_taken_as_a_value(tmp_path):
    # `--exclude -n` protects a file named -n; `--manifest --dry-run` is still a missing value.
    make_file(tmp_path / "-n", old=True)
    make_file(tmp_path / "other", old=True)
    result = run_cli(str(tmp_path), "--exclude", "-n", "--max-age-days", "30")
    assert result.returncode == 0, result.stderr
    assert snapshot(tmp_path) == {"file:-n"}
    before = snapshot(tmp_path)
    missing = run_cli(str(tmp_path), "--manifest", "--dry-run")
    assert missing.returncode == 2
    assert "error: --manifest: expected one argument" in missing.stderr
    # A missing value, then a misspelled flag: an error, never a real run that takes the
    # typo for a pattern (found by review).
    for args in (["--exclude-dir", "--dry_run"], ["--manifest", "--dryrun"]):
        typo = run_cli(str(tmp_path), *args)
        assert typo.returncode == 2, typo.stdout[-2000:]
        assert f"error: {args[0]}: expected one argument" in typo.stderr
    assert snapshot(tmp_path) == before


def test_a_metrics_file_through_a_symlink_and_dotdot_is_the_folder_the_write_uses(tmp_path):
    # link/../x/m.prom is other/x/m.prom when link -> other/dir: the check looks where the
    # write goes, not at the path folded without following the link (found by review).
    (tmp_path / "cwd").mkdir()
    (tmp_path / "other" / "dir").mkdir(parents=True)
    (tmp_path / "other" / "x").mkdir()
    (tmp_path / "tree").mkdir()
    os.symlink("../other/dir", tmp_path / "cwd" / "link")
    result = subprocess.run(
        [EFSPURGE, "../tree", "--dry-run", "--metrics-file", "link/../x/m.prom"],
        cwd=tmp_path / "cwd",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "other" / "x" / "m.prom").exists()


def test_pattern_variables_split_where_sets_end_and_keep_what_they_name(tmp_path):
    # '[[]' is the documented literal '['; the variable's split used to count it as an open
    # bracket and swallow every later comma, so '*.keep' and 'keep' were lost and their
    # files purged (found by review). Checked on disk, in a real run.
    root = tmp_path / "root"
    for name in ("[wip] draft.txt", "important.keep", "keep/db.sqlite", "tmp/junk"):
        make_file(root / name, old=True)
    env = {"EFSPURGE_EXCLUDE": "[[]*,*.keep", "EFSPURGE_EXCLUDE_DIR": "[[]*,keep"}
    result = run_cli(str(root), "--max-age-days", "30", env=env)
    assert result.returncode == 0, result.stderr
    remaining = {e for e in snapshot(root) if e.startswith("file:")}
    assert remaining == {"file:[wip] draft.txt", "file:important.keep", "file:keep/db.sqlite"}
    assert final(result.stdout)["files_excluded"] == 2


def test_an_exclude_dir_of_what_is_in_a_directory_is_refused(tmp_path):
    # 'keep/**', 'keep/*' match the directories below keep, not keep's own files, which
    # would be purged: refused, saying to write 'keep'.
    make_file(tmp_path / "keep/precious", old=True)
    before = snapshot(tmp_path)
    for pattern in ("keep/**", "keep/**/", "/keep/**", "**/keep/**", "keep/*", "keep/**/*"):
        result = run_cli(str(tmp_path), "--exclude-dir", pattern)
        assert result.returncode == 2
        assert "not the files in it: write" in result.stderr and result.stderr.count("\n") == 1
    assert snapshot(tmp_path) == before


def test_a_pattern_that_starts_with_path_is_refused(tmp_path):
    # `efspurge data --exclude-dir data/keep` would only exclude data/data/keep: what it was
    # meant to keep would be purged (found by review). Refused, saying how to write it.
    make_file(tmp_path / "data/keep/old", old=True)
    before = snapshot(tmp_path)
    for root, pattern in (("data", "data/keep"), ("./data/", "data/keep/"), ("data", "data/**")):
        result = subprocess.run(
            [EFSPURGE, root, "--exclude-dir", pattern], cwd=tmp_path, capture_output=True, text=True
        )
        assert result.returncode == 2, result.stdout[-500:]
        assert "starts with PATH ('data')" in result.stderr and result.stderr.count("\n") == 1
    absolute = run_cli(str(tmp_path / "data"), "--exclude", str(tmp_path).lstrip("/") + "/data/x")
    assert absolute.returncode == 2 and "starts with PATH" in absolute.stderr
    last_part = run_cli(str(tmp_path / "data"), "--exclude-dir", "data/keep")  # PATH's end
    assert last_part.returncode == 2 and "starts with PATH ('data')" in last_part.stderr
    assert snapshot(tmp_path) == before
    # Written relative to PATH, or anchored to say PATH really holds such a path: taken.
    ok = subprocess.run(
        [EFSPURGE, "data", "--exclude-dir", "keep", "--exclude-dir", "./data/keep"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert snapshot(tmp_path) == before  # keep/ excluded: its old file stays
