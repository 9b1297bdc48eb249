"""Settings: parsing, precedence (command line > environment > default), validation."""

from __future__ import annotations

import pytest

from efspurge.policy import NS_PER_DAY, AgePolicy
from efspurge.resolve import resolve_settings
from efspurge.settings import OPTIONS, Settings, SettingsError


def resolve(cli=None, env=None) -> Settings:
    values = {"path": "/data", **(cli or {})}
    return resolve_settings(values, env or {})


def test_defaults_match_the_interface():
    s = resolve()
    assert (s.max_age_days, s.max_concurrency, s.memory_limit_mb, s.task_batch_size) == (
        30.0,
        1000,
        800,
        5000,
    )
    assert (s.dry_run, s.remove_empty_dirs, s.max_empty_dirs_to_delete, s.log_level) == (
        False,
        False,
        500,
        "INFO",
    )


def test_every_option_has_an_environment_variable():
    env = {
        "EFSPURGE_MAX_AGE_DAYS": "7.5",
        "EFSPURGE_MAX_CONCURRENCY": "50",
        "EFSPURGE_MEMORY_LIMIT_MB": "256",
        "EFSPURGE_TASK_BATCH_SIZE": "100",
        "EFSPURGE_DRY_RUN": "yes",
        "EFSPURGE_REMOVE_EMPTY_DIRS": "on",
        "EFSPURGE_MAX_EMPTY_DIRS_TO_DELETE": "0",
        "EFSPURGE_LOG_LEVEL": "debug",
        "EFSPURGE_LOG_FORMAT": "TEXT",
        "EFSPURGE_PROGRESS_INTERVAL": "5",
        "EFSPURGE_IO_THREADS": "16",
        "EFSPURGE_PROCESSES": "3",
        "EFSPURGE_ONE_FILE_SYSTEM": "no",
        "EFSPURGE_MAX_DELETE": "1000",
        "EFSPURGE_MAX_RUNTIME": "1h30m",
        "EFSPURGE_MAX_OPS_PER_SECOND": "2500",
        "EFSPURGE_AGE_BY": "ATIME",
        "EFSPURGE_INCLUDE": "*.log,*.tmp",
        "EFSPURGE_EXCLUDE": "keep[,]me,*.pid",
        "EFSPURGE_EXCLUDE_DIR": ".snapshot",
        "EFSPURGE_KEEP_EMPTY_DIRS_NEWER_THAN": "2h",
        "EFSPURGE_SHARD_INDEX": "2",
        "EFSPURGE_SHARD_COUNT": "3",
        "EFSPURGE_MANIFEST": "/var/log/efspurge.jsonl",
        "EFSPURGE_METRICS_FILE": "/var/lib/node_exporter/efspurge.prom",
        "EFSPURGE_PUSHGATEWAY": "http://pushgateway:9091",
        "EFSPURGE_PUSH_JOB": "purge-tmp",
        "EFSPURGE_PUSH_LABEL": "instance=efs-a,env=prod",
        "EFSPURGE_FAIL_ON_PUSH_ERROR": "1",
    }
    assert {spec.env for spec in OPTIONS} == set(env)
    s = resolve(env=env)
    assert s == Settings(
        path="/data",
        max_age_days=7.5,
        max_concurrency=50,
        memory_limit_mb=256,
        task_batch_size=100,
        dry_run=True,
        remove_empty_dirs=True,
        max_empty_dirs_to_delete=0,
        log_level="DEBUG",
        log_format="text",
        progress_interval=5.0,
        io_threads=16,
        processes=3,
        one_file_system=False,
        max_delete=1000,
        max_runtime=5400.0,
        max_ops_per_second=2500.0,
        age_by="atime",
        include=("*.log", "*.tmp"),
        exclude=("keep[,]me", "*.pid"),
        exclude_dir=(".snapshot",),
        keep_empty_dirs_newer_than=7200.0,
        shard_index=2,
        shard_count=3,
        manifest="/var/log/efspurge.jsonl",
        metrics_file="/var/lib/node_exporter/efspurge.prom",
        pushgateway="http://pushgateway:9091",
        push_job="purge-tmp",
        push_label=("instance=efs-a", "env=prod"),
        fail_on_push_error=True,
    )


def test_command_line_wins_over_environment():
    s = resolve(
        cli={"max_age_days": 3.0, "dry_run": False},
        env={"EFSPURGE_MAX_AGE_DAYS": "90", "EFSPURGE_DRY_RUN": "1"},
    )
    assert s.max_age_days == 3.0 and s.dry_run is False


def test_path_from_environment():
    assert resolve_settings({}, {"EFSPURGE_PATH": "/mnt/efs"}).path == "/mnt/efs"
    with pytest.raises(SettingsError, match="no root path"):
        resolve_settings({}, {})


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "yes", "on", " On "])
def test_true_words(text):
    assert resolve(env={"EFSPURGE_DRY_RUN": text}).dry_run is True


@pytest.mark.parametrize("text", ["0", "false", "no", "off", "OFF"])
def test_false_words(text):
    assert resolve(env={"EFSPURGE_DRY_RUN": text}).dry_run is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EFSPURGE_DRY_RUN": "maybe"}, "EFSPURGE_DRY_RUN: expected one of"),
        ({"EFSPURGE_DRY_RUN": ""}, "EFSPURGE_DRY_RUN: is set but empty"),
        ({"EFSPURGE_MAX_AGE_DAYS": "thirty"}, "EFSPURGE_MAX_AGE_DAYS: expected a number"),
        ({"EFSPURGE_MAX_AGE_DAYS": "-1"}, "EFSPURGE_MAX_AGE_DAYS: must not be negative"),
        ({"EFSPURGE_MAX_AGE_DAYS": "nan"}, "EFSPURGE_MAX_AGE_DAYS: must be a finite number"),
        ({"EFSPURGE_MAX_AGE_DAYS": "inf"}, "EFSPURGE_MAX_AGE_DAYS: must be a finite number"),
        ({"EFSPURGE_MAX_CONCURRENCY": "0"}, "EFSPURGE_MAX_CONCURRENCY: must be at least 1"),
        ({"EFSPURGE_MAX_CONCURRENCY": "1.5"}, "EFSPURGE_MAX_CONCURRENCY: expected a whole"),
        ({"EFSPURGE_MEMORY_LIMIT_MB": "-1"}, "EFSPURGE_MEMORY_LIMIT_MB: must be at least 0"),
        ({"EFSPURGE_TASK_BATCH_SIZE": "-5"}, "EFSPURGE_TASK_BATCH_SIZE: must be at least 1"),
        (
            {"EFSPURGE_MAX_EMPTY_DIRS_TO_DELETE": "-1"},
            "EFSPURGE_MAX_EMPTY_DIRS_TO_DELETE: must be at least 0",
        ),
        ({"EFSPURGE_LOG_LEVEL": "LOUD"}, "EFSPURGE_LOG_LEVEL: expected one of DEBUG"),
        ({"EFSPURGE_LOG_FORMAT": "xml"}, "EFSPURGE_LOG_FORMAT: expected one of auto"),
        ({"EFSPURGE_IO_THREADS": "0"}, "EFSPURGE_IO_THREADS: must be 'auto' or between 1 and 1024"),
        ({"EFSPURGE_PROCESSES": "65"}, "EFSPURGE_PROCESSES: must be 'auto' or between 1 and 64"),
        ({"EFSPURGE_MAX_DELETE": "-1"}, "EFSPURGE_MAX_DELETE: must be at least 0"),
        ({"EFSPURGE_MAX_RUNTIME": "soon"}, "EFSPURGE_MAX_RUNTIME: expected a duration"),
        ({"EFSPURGE_MAX_RUNTIME": "1h30"}, "EFSPURGE_MAX_RUNTIME: every part of a duration"),
        ({"EFSPURGE_AGE_BY": "birthtime"}, "EFSPURGE_AGE_BY: expected one of mtime"),
        ({"EFSPURGE_EXCLUDE": "[unclosed"}, "EFSPURGE_EXCLUDE: bad pattern"),
        ({"EFSPURGE_EXCLUDE": "logs[/]keep.txt"}, "EFSPURGE_EXCLUDE: bad pattern"),  # set with '/'
        ({"EFSPURGE_INCLUDE": "a[!/]b"}, "EFSPURGE_INCLUDE: bad pattern"),
        ({"EFSPURGE_INCLUDE": "*.log,,*.tmp"}, "EFSPURGE_INCLUDE: a pattern must not be empty"),
        ({"EFSPURGE_ONE_FILE_SYSTEM": "sometimes"}, "EFSPURGE_ONE_FILE_SYSTEM: expected one of"),
        ({"EFSPURGE_PUSHGATEWAY": "pushgateway:9091"}, "EFSPURGE_PUSHGATEWAY: expected an http"),
        ({"EFSPURGE_PUSH_LABEL": "instance"}, "EFSPURGE_PUSH_LABEL: expected NAME=VALUE"),
        ({"EFSPURGE_PUSH_LABEL": "9x=1"}, "EFSPURGE_PUSH_LABEL: expected NAME=VALUE"),
        ({"EFSPURGE_PUSH_JOB": "a/b"}, "EFSPURGE_PUSH_JOB: expected a non-empty value"),
    ],
)
def test_bad_environment_values_name_the_variable(env, message):
    with pytest.raises(SettingsError) as info:
        resolve(env=env)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("cli", "env", "message"),
    [
        (
            {"max_age_days": 30.0},
            {"EFSPURGE_MAX_AGE_DAYS": "thirty"},
            "EFSPURGE_MAX_AGE_DAYS: expected",
        ),
        (
            {"max_delete": 10},
            {"EFSPURGE_MAX_DELETE": "-1"},
            "EFSPURGE_MAX_DELETE: must be at least",
        ),
        (
            {"exclude": ["*.keep"]},
            {"EFSPURGE_EXCLUDE": "[unclosed"},
            "EFSPURGE_EXCLUDE: bad pattern",
        ),
    ],
)
def test_a_bad_variable_is_refused_even_when_its_flag_overrides_it(cli, env, message):
    # The flag wins, but the deployment's environment holds a mistake: say so now rather
    # than on the day the flag is dropped.
    with pytest.raises(SettingsError) as info:
        resolve(cli=cli, env=env)
    assert str(info.value).startswith(message)


def test_an_empty_variable_beside_its_flag_is_a_blank_not_an_error():
    # Templates (Helm, compose) render unset values as empty: the flag says what is meant.
    s = resolve(cli={"manifest": "/tmp/m.jsonl"}, env={"EFSPURGE_MANIFEST": ""})
    assert s.manifest == "/tmp/m.jsonl"
    with pytest.raises(SettingsError, match=r"^EFSPURGE_DRY_RUN: is set but empty"):
        resolve(env={"EFSPURGE_DRY_RUN": ""})  # alone, it still is an error


def test_bad_command_line_values_name_the_flag():
    with pytest.raises(SettingsError, match=r"^--max-age-days: must not be negative"):
        resolve(cli={"max_age_days": -2.0})
    with pytest.raises(SettingsError, match=r"^--max-concurrency: must be at least 1"):
        resolve(cli={"max_concurrency": 0})


def test_io_threads_auto():
    assert resolve(env={"EFSPURGE_IO_THREADS": "auto"}).io_threads is None


def test_cutoff_is_exact_in_nanoseconds():
    now = 1_700_000_000 * 10**9
    assert AgePolicy.from_days(30, now_ns=now).cutoff_ns == now - 30 * NS_PER_DAY
    assert AgePolicy.from_days(0.5, now_ns=now).cutoff_ns == now - NS_PER_DAY // 2
    assert AgePolicy.from_days(0, now_ns=now).cutoff_ns == now


def test_huge_age_matches_nothing_without_overflow():
    policy = AgePolicy.from_days(1e12, now_ns=10**18)
    assert isinstance(policy.cutoff_ns, int)
    assert policy.cutoff_ns < -(10**25)  # before any representable file time


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45m", 2700), ("1h30m", 5400), ("90s", 90), ("3600", 3600), ("1.5h", 5400), ("2d", 172800)],
)
def test_durations(text, seconds):
    assert resolve(env={"EFSPURGE_MAX_RUNTIME": text}).max_runtime == seconds


@pytest.mark.parametrize("text", ["1M", "30M", "1h30M"])
def test_a_capital_m_is_refused_minutes_or_months(text):
    with pytest.raises(SettingsError, match="EFSPURGE_KEEP_EMPTY_DIRS_NEWER_THAN: 'M' could mean"):
        resolve(env={"EFSPURGE_KEEP_EMPTY_DIRS_NEWER_THAN": text})


@pytest.mark.parametrize(
    ("text", "patterns"),
    [
        ("[[]*,*.keep", ("[[]*", "*.keep")),  # '[[]' is a literal '[': the set ends there
        ("a[,]b,c", ("a[,]b", "c")),  # a comma in a set is part of it
        ("[]],x", ("[]]", "x")),  # ']' right after '[' is a member
        ("[!],]x,y", ("[!],]x", "y")),
        ("*.log, *.tmp", ("*.log", "*.tmp")),
    ],
)
def test_pattern_variables_split_where_the_pattern_rules_end_a_set(text, patterns):
    assert resolve(env={"EFSPURGE_EXCLUDE": text}).exclude == patterns


def test_repeated_flags_replace_the_environment_list():
    s = resolve(cli={"exclude": ["a", "b"]}, env={"EFSPURGE_EXCLUDE": "c"})
    assert s.exclude == ("a", "b")


def test_shard_index_from_indexed_jobs_and_batch_arrays():
    assert resolve(env={"EFSPURGE_SHARD_COUNT": "4", "JOB_COMPLETION_INDEX": "3"}).shard_index == 3
    batch = {"EFSPURGE_SHARD_COUNT": "4", "AWS_BATCH_JOB_ARRAY_INDEX": "1"}
    assert resolve(env=batch).shard_index == 1
    explicit = {
        "EFSPURGE_SHARD_COUNT": "4",
        "EFSPURGE_SHARD_INDEX": "0",
        "JOB_COMPLETION_INDEX": "3",
    }
    assert resolve(env=explicit).shard_index == 0
    # Without a count, an Indexed Job's index alone does not split anything.
    assert resolve(env={"JOB_COMPLETION_INDEX": "3"}).shard_count == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EFSPURGE_SHARD_COUNT": "4"}, "--shard-index: required"),
        (
            {"EFSPURGE_SHARD_COUNT": "4", "EFSPURGE_SHARD_INDEX": "4"},
            "EFSPURGE_SHARD_INDEX: must be between 0 and 3",  # named where it came from
        ),
        ({"EFSPURGE_SHARD_INDEX": "1"}, "EFSPURGE_SHARD_INDEX: must be between 0 and 0"),
        ({"EFSPURGE_SHARD_COUNT": "0"}, "EFSPURGE_SHARD_COUNT: must be at least 1"),
        (
            {"EFSPURGE_SHARD_COUNT": "2", "JOB_COMPLETION_INDEX": "x"},
            "JOB_COMPLETION_INDEX: expected",
        ),
    ],
)
def test_bad_shard_settings(env, message):
    with pytest.raises(SettingsError) as info:
        resolve(env=env)
    assert str(info.value).startswith(message)
