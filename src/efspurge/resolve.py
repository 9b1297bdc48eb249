"""Effective settings: command line over environment over defaults, validated once.

Values from the command line arrive parsed by argparse; the EFSPURGE_* variables are parsed
here with the same parsers, and both pass the same range checks (the option table in
:mod:`efspurge.settings`). Everything here is pure (no file system access). Each error names
the flag or the variable it came from.
"""

from __future__ import annotations

import datetime
import numbers
import operator
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from efspurge.selection import normalize as normalize_pattern
from efspurge.selection import split_list as split_patterns
from efspurge.settings import (
    ENV_PREFIX,
    OPTIONS,
    PATH_ENV,
    OptionSpec,
    Settings,
    SettingsError,
    parse_bool,
    parse_duration,
    parse_file_path,
    parse_float,
    parse_int,
    parse_io_threads,
    parse_log_level,
)

# Where Kubernetes Indexed Jobs and AWS Batch array jobs put each worker's index.
INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX")


# EFSPURGE_* variables that are not options but are known: the root, and the project's own
# test script's (scripts/test.sh), which may be set in the shell that runs efspurge.
OTHER_VARIABLES = (PATH_ENV, "EFSPURGE_TEST_VENV")


def split_list(text: str, parse: Callable[[str], Any]) -> tuple[Any, ...]:
    """Items of one environment variable: comma-separated (a literal comma is [,]; sets end
    where the pattern rules end them), each parsed as the option's single value would be."""
    return tuple(parse(p.strip()) for p in split_patterns(text))


# What Kubernetes puts in every pod's environment for each Service of its namespace (unless
# the pod sets enableServiceLinks: false): a Service named efspurge or efspurge-pushgateway
# gives EFSPURGE_SERVICE_HOST, EFSPURGE_PUSHGATEWAY_PORT_9091_TCP_ADDR and the like. They are
# not efspurge's options, and refusing them would fail every run in that namespace.
SERVICE_LINK = re.compile(
    r"EFSPURGE(_[A-Z0-9_]+?)?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?"
    r"|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)"
)


def check_unknown_variables(environ: Mapping[str, str]) -> None:
    """A misspelled variable (EFSPURGE_DRYRUN) must not be ignored: the run would go ahead
    without it, for example deleting for real. Raises SettingsError naming the closest.
    Kubernetes' service links (SERVICE_LINK) are not efspurge's and are left alone."""
    known = [spec.env for spec in OPTIONS] + list(OTHER_VARIABLES)
    unknown = sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX) and name not in known and not SERVICE_LINK.fullmatch(name)
    )
    if not unknown:
        return
    import difflib  # only on this error path: it costs a run's start-up ~1 ms

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


def _resolve_shard(
    chosen: dict[str, Any], environ: Mapping[str, str], sources: dict[str, str]
) -> None:
    count = chosen.get("shard_count", 1)
    if "shard_index" not in chosen and count > 1:
        for name in INDEX_VARIABLES:
            raw = environ.get(name, "").strip()
            if raw:
                try:
                    chosen["shard_index"] = parse_int(raw)
                except ValueError as exc:
                    raise SettingsError(f"{name}: {exc}") from None
                sources["shard_index"] = name
                break
        else:
            raise SettingsError(
                "--shard-index: required with --shard-count above 1 (or set "
                f"EFSPURGE_SHARD_INDEX, {' or '.join(INDEX_VARIABLES)})"
            )
    # Named as the user gave it: the flag, EFSPURGE_SHARD_INDEX or the Job's own variable.
    _check_shard_index(chosen, sources.get("shard_index", "--shard-index"))


def _env_value(spec: OptionSpec, raw: str) -> Any:
    """One EFSPURGE_* variable's value, parsed and range-checked, or SettingsError naming it."""
    if not raw.strip():
        raise SettingsError(f"{spec.env}: is set but empty")
    try:
        value = split_list(raw, spec.parse) if spec.multiple else spec.parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{spec.env}: {exc}") from None
    problem = spec.check(value) if spec.check and value is not None else None
    if problem:
        raise SettingsError(f"{spec.env}: {problem}")
    return value


def _check_shard_index(chosen: dict[str, Any], name: str) -> None:
    count, index = chosen.get("shard_count", 1), chosen.get("shard_index", 0)
    if not 0 <= index < count:
        raise SettingsError(f"{name}: must be between 0 and {count - 1}, got {index}")


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
        raw = environ.get(spec.env)
        if raw is not None and (value is None or raw.strip()):
            # Checked even when the flag overrides it: a bad value in a deployment's
            # environment is a mistake to report, not to leave waiting for the day the flag
            # is dropped. An empty one beside its flag is a template's blank (Helm,
            # compose), and the flag says what is meant.
            from_env = _env_value(spec, raw)
            if value is None:
                value, source = from_env, spec.env
        if value is None or (spec.multiple and not value):
            continue
        if spec.multiple:
            value = tuple(value)
        problem = spec.check(value) if spec.check else None
        if problem:
            raise SettingsError(f"{source}: {problem}")
        chosen[spec.field] = value
        sources[spec.field] = source

    _resolve_shard(chosen, environ, sources)

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


def root_spellings(path: str) -> tuple[str, ...]:
    """The absolute paths an absolute pattern may start with to name something in PATH.

    The walk is of PATH with its symlinks resolved (os.path.realpath). PATH as written, made
    absolute, names the same directory when it goes through a symlink (``/mnt/efs`` ->
    ``/data/efs``): both spellings are then read. But not when ``..`` follows a symlink
    (``app/current/..`` is the parent of ``current``'s target, while the text says ``app``):
    then only the resolved one is, or ``--exclude-dir /srv/app/releases/keep`` would be read
    against the wrong directory and protect nothing (found by review)."""
    written = os.path.abspath(path)
    real = os.path.realpath(path)
    if real == written:
        return (written,)
    try:
        same = os.path.samestat(os.stat(written), os.stat(real))
    except OSError:
        same = False
    return (written, real) if same else (real,)


def _normalize_patterns(chosen: dict[str, Any], sources: dict[str, str], path: str) -> None:
    if not any(chosen.get(f) for f in ("include", "exclude", "exclude_dir")):
        return
    roots = root_spellings(path)
    for field in ("include", "exclude", "exclude_dir"):
        if field not in chosen:
            continue
        try:
            chosen[field] = tuple(
                normalize_pattern(p, roots, for_dirs=field == "exclude_dir", given=path)
                for p in chosen[field]
            )
        except ValueError as exc:
            raise SettingsError(f"{sources[field]}: {exc}") from None


# --- the Python API: keywords, checked as strictly as the command line's text ---------------


def resolve_keywords(root_path: str, values: Mapping[str, Any]) -> Settings:
    """Settings from AsyncPurger's keywords: each value of the type its option takes (a bool
    for a switch, never a truthy stand-in; a list of strings for a repeatable option), then
    the command line's range checks and pattern spellings. Raises SettingsError naming the
    keyword: a script with a bad value stops before anything is touched."""
    chosen: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in OPTIONS:
        if spec.field not in values:
            continue
        value = values[spec.field]
        try:
            value = _keyword_value(spec, value)
        except ValueError as exc:
            raise SettingsError(f"{spec.field}: {exc}") from None
        if value is None:
            continue  # None where the option means "auto" or "off"
        problem = spec.check(value) if spec.check else None
        if problem:
            raise SettingsError(f"{spec.field}: {problem}")
        chosen[spec.field] = value
        sources[spec.field] = spec.field
    count = chosen.get("shard_count", 1)
    if count > 1 and "shard_index" not in chosen:
        raise SettingsError("shard_index: required with shard_count above 1")
    _check_shard_index(chosen, "shard_index")
    try:
        path = os.fspath(root_path)
    except TypeError:
        path = None
    if not isinstance(path, str) or not path.strip():
        raise SettingsError(f"root_path: expected a non-empty path, got {root_path!r}")
    _normalize_patterns(chosen, sources, path)
    return Settings(path=path, **chosen)


# Options whose default is "none" (auto, off): None is a value they take.
_NONE_ALLOWED = frozenset(("io_threads", "processes", "manifest", "metrics_file", "pushgateway"))


def _keyword_value(spec: OptionSpec, value: Any) -> Any:
    """One keyword's value, as the option's type, or ValueError saying what was expected."""
    if value is None:
        if spec.field in _NONE_ALLOWED:
            return None
        raise ValueError("must not be None")
    if spec.multiple:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ValueError(
                f"expected a list of strings, got {value!r} (one value: {spec.field}=[...])"
            )
        return tuple(_one_value(spec, item) for item in value)
    return _one_value(spec, value)


def _one_value(spec: OptionSpec, value: Any) -> Any:
    parse = spec.parse
    if parse is parse_bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected True or False, got {value!r}")
    if parse is parse_int:
        return _whole(value)
    if parse is parse_io_threads:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return None
        return _whole(value, "'auto' or ")
    if parse is parse_float:
        return _real(value)
    if parse is parse_duration:
        if isinstance(value, datetime.timedelta):
            return value.total_seconds()
        if isinstance(value, str):
            return parse_duration(value)
        return _real(value, "seconds, a timedelta or a duration such as '1h30m'")
    if parse is parse_log_level and isinstance(value, int) and value in _LEVEL_NAMES:
        return _LEVEL_NAMES[value]  # logging.DEBUG and the like
    if parse is parse_file_path and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return parse(value)  # the text options: levels, formats, patterns, paths, URLs
    raise ValueError(f"expected a string, got {value!r}")


_LEVEL_NAMES = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


def _whole(value: Any, also: str = "") -> int:
    """An int, or anything that is one (operator.index: numpy integers); never a bool."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise ValueError(f"expected {also}a whole number, got {value!r}")


def _real(value: Any, what: str = "a number") -> float:
    """A real number (int, float, Decimal, Fraction, numpy) as a float; never a bool."""
    if isinstance(value, numbers.Number) and not isinstance(value, bool | complex):
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"is too large, got {value!r}") from None
        except (TypeError, ValueError):
            pass
    raise ValueError(f"expected {what}, got {value!r}")
