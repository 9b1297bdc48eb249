"""Effective settings: command line over environment over defaults, validated once.

Everything here is pure (no file system access), so that every bad value is rejected before
the tree is touched. Each error names the flag or the variable it came from.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from efspurge.selection import normalize as normalize_pattern
from efspurge.selection import validate as validate_patterns

ENV_PREFIX = "EFSPURGE_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class SettingsError(ValueError):
    """A bad configuration value. The message is one line and names its source."""


@dataclass(frozen=True, slots=True)
class Settings:
    path: str
    max_age_days: float = 30.0
    max_concurrency: int = 1000
    memory_limit_mb: int = 800
    task_batch_size: int = 5000
    dry_run: bool = False
    remove_empty_dirs: bool = False
    max_empty_dirs_to_delete: int = 500
    log_level: str = "INFO"
    log_format: str = "auto"
    progress_interval: float = 30.0
    io_threads: int | None = None  # None: chosen from the filesystem type (see engine docs)
    processes: int | None = None  # None: chosen from the filesystem type and the CPUs
    # Safety rails and selection
    one_file_system: bool = True
    max_delete: int = 0  # 0: no cap
    max_runtime: float = 0.0  # seconds; 0: no limit
    max_ops_per_second: float = 0.0  # for the whole job (divided among shards); 0: no limit
    age_by: str = "mtime"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    exclude_dir: tuple[str, ...] = ()
    # Opt-in rail: keep an empty directory found empty whose own mtime is newer than this
    # many seconds (0: off, every empty directory goes, as the reference does).
    keep_empty_dirs_newer_than: float = 0.0
    # Scale-out: this process handles the files of shard `shard_index` of `shard_count`.
    shard_index: int = 0
    shard_count: int = 1
    # Observability
    manifest: str | None = None
    metrics_file: str | None = None
    pushgateway: str | None = None
    push_job: str = "efspurge"
    push_label: tuple[str, ...] = ()  # extra grouping-key labels, NAME=VALUE
    fail_on_push_error: bool = False

    @property
    def reads_atime(self) -> bool:
        """Ages come from atime: directories are opened with O_NOATIME, so that listing them
        changes nothing a later run reads."""
        return self.age_by in ("atime", "newest")

    def as_log_fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --- value parsers: each takes the raw text and returns the value or raises ValueError ---------


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected one of 1/0, true/false, yes/no, on/off, got {text!r}")


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def parse_float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def parse_log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return level


AGE_BY = ("mtime", "atime", "ctime", "newest")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'45m', '1h30m', '90s', '2h', '1.5h' or plain seconds ('3600')."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(num + unit for num, unit in parts) != compact:
        raise ValueError(f"expected a duration such as 45m, 1h30m, 90s or 3600, got {text!r}")
    if len(parts) > 1 and any(unit == "" for _, unit in parts):
        raise ValueError(f"every part of a duration needs a unit (s, m, h, d), got {text!r}")
    return sum(float(num) * _UNIT_SECONDS[unit] for num, unit in parts)


def parse_age_by(text: str) -> str:
    value = text.strip().lower()
    if value not in AGE_BY:
        raise ValueError(f"expected one of {', '.join(AGE_BY)}, got {text!r}")
    return value


def parse_pattern(text: str) -> str:
    if not text.strip():
        raise ValueError("a pattern must not be empty")
    return text


def parse_file_path(text: str) -> str:
    if not text.strip():
        raise ValueError("a file path must not be empty")
    return text


def split_list(text: str, parse: Callable[[str], Any]) -> tuple[Any, ...]:
    """Items of one environment variable: comma-separated (a literal comma is [,]), each
    parsed as the option's single value would be."""
    parts = []
    depth, current = 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
        if ch == "," and not depth:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return tuple(parse(p.strip()) for p in parts)


_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def parse_url(text: str) -> str:
    """An http(s) URL with a host, an optional valid port and path; nothing that would only
    fail when the metrics are pushed at the end of the run."""
    url = text.strip()
    bad = f"expected an http:// or https:// URL, got {text!r}"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError(f"{bad}: it contains a space or a control character")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises ValueError when it is not a number in 0-65535
    except ValueError as exc:
        raise ValueError(f"{bad}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(bad)
    if not parts.hostname:
        raise ValueError(f"{bad}: no host name")
    if port == 0:
        raise ValueError(f"{bad}: port 0")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"{bad}: a query or fragment cannot be pushed to")
    return url


def parse_label_value(text: str) -> str:
    if not text.strip() or "/" in text:
        raise ValueError(f"expected a non-empty value without '/', got {text!r}")
    return text.strip()


def parse_label_pair(text: str) -> str:
    name, sep, value = text.partition("=")
    if not sep or not _LABEL_NAME.match(name.strip()) or name.strip().startswith("__"):
        raise ValueError(f"expected NAME=VALUE with a Prometheus label name, got {text!r}")
    parse_label_value(value)
    return f"{name.strip()}={value.strip()}"


LOG_FORMATS = ("auto", "json", "text")


def parse_log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}, got {text!r}")
    return value


def parse_io_threads(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    return parse_int(text)


# --- range checks: each takes the parsed value and returns an error text or None -------------


def _finite_non_negative(value: float) -> str | None:
    if math.isnan(value) or math.isinf(value):
        return f"must be a finite number, got {value}"
    if value < 0:
        return f"must not be negative, got {value}"
    return None


# About 273 years: older than any file a filesystem dates in this era, yet a cutoff every
# date routine can still represent. A larger age is surely a mistake (1e300, a typo in a
# units conversion) and is refused rather than run.
MAX_AGE_DAYS = 100_000


def _age_days(value: float) -> str | None:
    problem = _finite_non_negative(value)
    if problem is None and value > MAX_AGE_DAYS:
        problem = f"must be at most {MAX_AGE_DAYS} (about 273 years), got {value:g}"
    return problem


def _at_least(minimum: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}, got {value}"

    return check


def _optional_at_least_one(value: int | None) -> str | None:
    return None if value is None or value >= 1 else f"must be 'auto' or at least 1, got {value}"


@dataclass(frozen=True, slots=True)
class OptionSpec:
    field: str
    parse: Callable[[str], Any]
    check: Callable[[Any], str | None] | None = None
    # A repeatable flag; its variable holds a comma-separated list.
    multiple: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.field.upper()


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("max_age_days", parse_float, _age_days),
    OptionSpec("max_concurrency", parse_int, _at_least(1)),
    OptionSpec("memory_limit_mb", parse_int, _at_least(0)),  # 0: no limit (the reference's)
    OptionSpec("task_batch_size", parse_int, _at_least(1)),
    OptionSpec("dry_run", parse_bool),
    OptionSpec("remove_empty_dirs", parse_bool),
    OptionSpec("max_empty_dirs_to_delete", parse_int, _at_least(0)),
    OptionSpec("log_level", parse_log_level),
    OptionSpec("log_format", parse_log_format),
    OptionSpec("progress_interval", parse_float, _finite_non_negative),
    OptionSpec("io_threads", parse_io_threads, _optional_at_least_one),
    OptionSpec("processes", parse_io_threads, _optional_at_least_one),
    OptionSpec("one_file_system", parse_bool),
    OptionSpec("max_delete", parse_int, _at_least(0)),
    OptionSpec("max_runtime", parse_duration, _finite_non_negative),
    OptionSpec("max_ops_per_second", parse_float, _finite_non_negative),
    OptionSpec("age_by", parse_age_by),
    OptionSpec("include", parse_pattern, validate_patterns, multiple=True),
    OptionSpec("exclude", parse_pattern, validate_patterns, multiple=True),
    OptionSpec("exclude_dir", parse_pattern, validate_patterns, multiple=True),
    OptionSpec("keep_empty_dirs_newer_than", parse_duration, _finite_non_negative),
    OptionSpec("shard_index", parse_int, _at_least(0)),
    OptionSpec("shard_count", parse_int, _at_least(1)),
    OptionSpec("manifest", parse_file_path),
    OptionSpec("metrics_file", parse_file_path),
    OptionSpec("pushgateway", parse_url),
    OptionSpec("push_job", parse_label_value),
    OptionSpec("push_label", parse_label_pair, multiple=True),
    OptionSpec("fail_on_push_error", parse_bool),
)
# Where Kubernetes Indexed Jobs and AWS Batch array jobs put each worker's index.
INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX")
PATH_ENV = ENV_PREFIX + "PATH"


# EFSPURGE_* variables that are not options but are known: the root, and the project's own
# test script's (scripts/test.sh), which may be set in the shell that runs efspurge.
OTHER_VARIABLES = (PATH_ENV, "EFSPURGE_TEST_VENV")


def check_unknown_variables(environ: Mapping[str, str]) -> None:
    """A misspelled variable (EFSPURGE_DRYRUN) must not be ignored: the run would go ahead
    without it, for example deleting for real. Raises SettingsError naming the closest."""
    known = [spec.env for spec in OPTIONS] + list(OTHER_VARIABLES)
    unknown = sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in known)
    if not unknown:
        return
    described = []
    suffixes = {name[len(ENV_PREFIX) :]: name for name in known}
    for name in unknown:
        # Compared without the common prefix, which would make everything look close.
        close = difflib.get_close_matches(name[len(ENV_PREFIX) :], suffixes, n=1, cutoff=0.6)
        described.append(f"{name} (did you mean {suffixes[close[0]]}?)" if close else name)
    raise SettingsError(
        f"{', '.join(described)}: unknown variable{'s' if len(unknown) > 1 else ''}; "
        f"efspurge reads {ENV_PREFIX}<OPTION> for the options in --help and {PATH_ENV}"
    )


def _resolve_shard(chosen: dict[str, Any], environ: Mapping[str, str]) -> None:
    count = chosen.get("shard_count", 1)
    if "shard_index" not in chosen and count > 1:
        for name in INDEX_VARIABLES:
            raw = environ.get(name, "").strip()
            if raw:
                try:
                    chosen["shard_index"] = parse_int(raw)
                except ValueError as exc:
                    raise SettingsError(f"{name}: {exc}") from None
                break
        else:
            raise SettingsError(
                "--shard-index: required with --shard-count above 1 (or set "
                f"EFSPURGE_SHARD_INDEX, {' or '.join(INDEX_VARIABLES)})"
            )
    index = chosen.get("shard_index", 0)
    if not 0 <= index < count:
        raise SettingsError(f"--shard-index: must be between 0 and {count - 1}, got {index}")


def resolve_settings(cli_values: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Merge command-line values (None: not given) with the environment and the defaults.

    Values from the command line arrive already parsed by argparse; values from the
    environment are parsed here. Both pass the same range check.
    """
    check_unknown_variables(environ)
    chosen: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in OPTIONS:
        value = cli_values.get(spec.field)
        source = spec.flag
        if value is None and spec.env in environ:
            source = spec.env
            raw = environ[spec.env]
            if not raw.strip():
                raise SettingsError(f"{spec.env}: is set but empty")
            try:
                value = split_list(raw, spec.parse) if spec.multiple else spec.parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{spec.env}: {exc}") from None
        if value is None or (spec.multiple and not value):
            continue
        if spec.multiple:
            value = tuple(value)
        problem = spec.check(value) if spec.check else None
        if problem:
            raise SettingsError(f"{source}: {problem}")
        chosen[spec.field] = value
        sources[spec.field] = source

    _resolve_shard(chosen, environ)

    path = cli_values.get("path")
    root_for_patterns = path if path is not None else environ.get(PATH_ENV)
    if path is not None and not path.strip():
        # An unset variable in `efspurge "$EFS_PATH"` must not mean the working directory.
        raise SettingsError(f"PATH: the root path argument is empty ({path!r})")
    if path is None:
        path = environ.get(PATH_ENV)
        if path is not None and not path.strip():
            raise SettingsError(f"{PATH_ENV}: is set but empty")
    if path is None:
        raise SettingsError(f"PATH: no root path given (pass it as an argument or set {PATH_ENV})")
    _normalize_patterns(chosen, sources, root_for_patterns or path)
    return Settings(path=path, **chosen)


def check_settings(settings: Settings) -> Settings:
    """The range checks of every option, for a Settings built in Python (the API)."""
    for spec in OPTIONS:
        value = getattr(settings, spec.field)
        if value is None or spec.check is None or (spec.multiple and not value):
            continue
        problem = spec.check(tuple(value) if spec.multiple else value)
        if problem:
            raise SettingsError(f"{spec.field}: {problem}")
    if not 0 <= settings.shard_index < settings.shard_count:
        raise SettingsError(
            f"shard_index: must be between 0 and {settings.shard_count - 1}, "
            f"got {settings.shard_index}"
        )
    return settings


def _normalize_patterns(chosen: dict[str, Any], sources: dict[str, str], path: str) -> None:
    root = os.path.abspath(path)  # no file system access: only the working directory
    for field in ("include", "exclude", "exclude_dir"):
        if field not in chosen:
            continue
        try:
            chosen[field] = tuple(
                normalize_pattern(p, root, for_dirs=field == "exclude_dir") for p in chosen[field]
            )
        except ValueError as exc:
            raise SettingsError(f"{sources[field]}: {exc}") from None
