"""The settings of a run: the Settings object, each option's parser and range check, and the
option table that ties every field to its flag and its environment variable.

Everything here is pure (no file system access), so that every bad value is rejected before
the tree is touched. Each error names the flag or the variable it came from. Merging the
command line, the environment and the defaults into one Settings: :mod:`efspurge.resolve`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

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

    def without_effect(self) -> list[tuple[str, str]]:
        """Options set away from their default that this run cannot use, with what they
        need: (option, needed). Said at start, so that a mistake in a deployment shows."""
        needs = {}
        if not self.remove_empty_dirs:
            needs.update(dict.fromkeys(_NEED_EMPTY_DIRS, "--remove-empty-dirs"))
        if not self.metrics_file and not self.pushgateway:
            needs.update(dict.fromkeys(_NEED_METRICS, "--metrics-file or --pushgateway"))
        defaults = {f.name: f.default for f in fields(self)}
        return [
            ("--" + name.replace("_", "-"), needed)
            for name, needed in needs.items()
            if getattr(self, name) != defaults[name]
        ]


# Options that only mean something with another (Settings.without_effect).
_NEED_EMPTY_DIRS = ("keep_empty_dirs_newer_than", "max_empty_dirs_to_delete")
_NEED_METRICS = ("push_job", "push_label", "fail_on_push_error")


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
    if "M" in text:
        # Minutes or months? Read as minutes, --keep-empty-dirs-newer-than 1M would keep a
        # month's empty directories for one minute only.
        raise ValueError(f"'M' could mean minutes or months: write m for minutes, got {text!r}")
    compact = text.strip().lower().replace(" ", "")
    if compact.startswith("-"):
        raise ValueError(f"must not be negative, got {text!r}")
    parts = _DURATION.findall(compact)
    if not compact or "".join(num + unit for num, unit in parts) != compact:
        raise ValueError(f"expected a duration such as 45m, 1h30m, 90s or 3600, got {text!r}")
    if len(parts) > 1 and any(unit == "" for _, unit in parts):
        raise ValueError(f"every part of a duration needs a unit (s, m, h, d), got {text!r}")
    units = [_UNIT_SECONDS[unit] for _, unit in parts]
    if len(parts) > 1 and units != sorted(set(units), reverse=True):
        # '1h1h' or '30m1h': a typo more likely than a sum; say so rather than guess.
        raise ValueError(f"each unit once, largest first (such as 1d2h30m), got {text!r}")
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


_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def parse_url(text: str) -> str:
    """An http(s) URL with a host, an optional valid port and path; nothing that would only
    fail when the metrics are pushed at the end of the run."""
    url = text.strip()
    bad = f"expected an http:// or https:// URL, got {text!r}"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError(f"{bad}: it contains a space or a control character")
    import urllib.parse  # only with --pushgateway: ~3 ms of every start-up otherwise

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
        return f"must not be negative, got {value:g}"  # -1, not -1.0
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


# Upper bounds that no deployment needs and that a typo must not reach: every process is a
# fork of the walk with descriptors and memory of its own (--processes 100000 would take the
# machine down), and every thread a stack. --max-concurrency bounds the threads actually used.
MAX_PROCESSES = 64
MAX_IO_THREADS = 1024


def _auto_or_between(maximum: int) -> Callable[[int | None], str | None]:
    def check(value: int | None) -> str | None:
        if value is None or 1 <= value <= maximum:
            return None
        return f"must be 'auto' or between 1 and {maximum}, got {value}"

    return check


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
    OptionSpec("io_threads", parse_io_threads, _auto_or_between(MAX_IO_THREADS)),
    OptionSpec("processes", parse_io_threads, _auto_or_between(MAX_PROCESSES)),
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
# The variable for the root (the PATH argument).
PATH_ENV = ENV_PREFIX + "PATH"
