"""The command line: arguments and environment -> Settings -> a run -> an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

# Only light modules at import time: main() installs the early signal handlers before the
# engine (asyncio, the purger, rich...) is imported, which takes most of the start-up time.
from efspurge import __version__, signals

if TYPE_CHECKING:
    from efspurge.settings import Settings

EXIT_USAGE = 2  # the same as efspurge.stats.ExitCode.USAGE, without importing the engine
EXIT_FATAL = 3

HELP = {
    "max_age_days": "files older than this many days are deleted, by modification time "
    "unless --age-by says otherwise (fractions allowed; default: 30)",
    "max_concurrency": "ceiling on I/O operations in flight, i.e. on I/O threads (default: 1000)",
    "memory_limit_mb": "soft memory limit: above it, discovery of new work pauses "
    "(0 = no limit; default: 800)",
    "task_batch_size": "directory entries listed per batch; a huge directory is streamed in "
    "batches of this size, never listed whole (default: 5000)",
    "dry_run": "decide and count everything, delete nothing",
    "remove_empty_dirs": "remove directories left empty, children before parents (the root never)",
    "max_empty_dirs_to_delete": "at most this many directories are removed per run "
    "(0 = no limit; default: 500)",
    "log_level": "DEBUG, INFO, WARNING, ERROR or CRITICAL (default: INFO)",
    "log_format": "json: JSON lines on stdout; text: readable lines, a live progress display "
    "and a summary; auto: text when stdout is a terminal, else json (default: auto)",
    "progress_interval": "seconds between progress records (0 = none; default: 30)",
    "io_threads": "I/O threads in each process, at most 1024: 'auto' picks 1 on local "
    "filesystems and 256 on network ones, shared out between the processes; all processes' "
    "threads together never more than --max-concurrency, but at least one per process "
    "(default: auto)",
    "processes": "processes sharing the work of one run, at most 64 (N-1 worker processes "
    "delete the files the walk lists; every decision stays in one place): 'auto' picks 2 on "
    "a local filesystem and 4 on a network one with 2 or more CPUs, else 1 (default: auto)",
    "one_file_system": "never enter a directory on another filesystem than PATH (mount points "
    "are skipped and counted; default: on)",
    "max_delete": "stop after deleting this many files, with exit code 4; a dry run stops "
    "where the real run would (0 = no cap; default: 0)",
    "max_runtime": "stop cleanly after this long (45m, 1h30m, 90s, or seconds), with exit "
    "code 5 (0 = no limit; default: 0)",
    "max_ops_per_second": "ceiling on filesystem operations per second (listings, lstats, "
    "opens, unlinks, rmdirs) for the whole job, divided among --shard-count shards "
    "(0 = no limit; default: 0)",
    "age_by": "which timestamp ages a file: mtime, atime, ctime, or newest of the three "
    "(default: mtime)",
    "include": "only consider files matching this glob (repeatable; see README for the rules)",
    "exclude": "never delete files matching this glob (repeatable; wins over --include)",
    "exclude_dir": "do not even list directories matching this glob (repeatable)",
    "keep_empty_dirs_newer_than": "with --remove-empty-dirs, keep a directory that was already "
    "empty and whose own mtime is newer than this (45m, 2h, 1d; 0 = off; default: 0)",
    "shard_index": "this worker's shard, 0..N-1 (default: JOB_COMPLETION_INDEX or "
    "AWS_BATCH_JOB_ARRAY_INDEX when --shard-count is above 1)",
    "shard_count": "split the files among N independent workers; each run handles only its "
    "shard (default: 1)",
    "manifest": "write one JSON line per file deleted (or, in a dry run, that would be) and "
    "per directory removed to this file",
    "metrics_file": "at the end, write Prometheus metrics to this file (node_exporter "
    "textfile format, atomically)",
    "pushgateway": "at the end, push Prometheus metrics to this Pushgateway URL",
    "push_job": "the job label of the metrics, pushed and in --metrics-file (default: efspurge)",
    "push_label": "an extra label NAME=VALUE of the metrics' group, pushed and in "
    "--metrics-file (repeatable; "
    "shard is added by itself with --shard-count)",
    "fail_on_push_error": "exit with code 6 when writing or pushing metrics fails (default: "
    "only log it)",
}
METAVARS = {
    "max_age_days": "DAYS",
    "max_concurrency": "N",
    "memory_limit_mb": "MB",
    "task_batch_size": "N",
    "max_empty_dirs_to_delete": "N",
    "log_level": "LEVEL",
    "log_format": "{auto,json,text}",
    "progress_interval": "SECONDS",
    "io_threads": "N|auto",
    "processes": "N|auto",
    "max_delete": "N",
    "max_runtime": "DURATION",
    "max_ops_per_second": "N",
    "keep_empty_dirs_newer_than": "DURATION",
    "age_by": "{mtime,atime,ctime,newest}",
    "include": "GLOB",
    "exclude": "GLOB",
    "exclude_dir": "GLOB",
    "shard_index": "I",
    "shard_count": "N",
    "manifest": "FILE",
    "metrics_file": "FILE",
    "pushgateway": "URL",
    "push_job": "NAME",
    "push_label": "NAME=VALUE",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the flag, not a usage dump.

    Abbreviations are off (``--dry`` is not ``--dry-run``): a future option must never change
    what an existing command line means. An unknown flag gets the closest real one, if any,
    and a second line pointing at --help.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        # "argument --max-runtime: ..." as "--max-runtime: ...", like every other message
        # about a value; the argument lists argparse itself makes are left as they are.
        if message.startswith("argument -"):
            message = message.removeprefix("argument ")
        if message.startswith("unrecognized arguments:"):
            message += self._closest(message.partition(":")[2].split())
            message += f"; see '{self.prog} --help'"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")  # one line

    def _closest(self, unknown: list[str]) -> str:
        import difflib

        for word in unknown:
            if word.partition("=")[0] in REMOVED_FLAGS:
                return f" ({REMOVED_FLAGS[word.partition('=')[0]]})"
        flags = [f for action in self._actions for f in action.option_strings]
        for word in unknown:
            if word.partition("=")[0] in flags:  # a real flag, so it came after "--"
                return f" ({word} comes after '--', which ends the options)"
            if word.startswith("--"):
                match = difflib.get_close_matches(word.partition("=")[0], flags, n=1)
                if match:
                    return f" (did you mean {match[0]}?)"
        return ""


# Flags of earlier versions, with what replaces them: a helpful word instead of a guess.
REMOVED_FLAGS = {
    "--keep-young-dirs": "removed in 2.0.0: young empty directories are kept only with "
    "--keep-empty-dirs-newer-than DURATION",
    "--no-keep-young-dirs": "removed in 2.0.0: every empty directory is removed by default now",
}


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def build_parser() -> argparse.ArgumentParser:
    from efspurge.settings import OPTIONS, PATH_ENV

    parser = _Parser(
        prog="efspurge",
        description="Delete regular files older than a given age below PATH, concurrently, "
        "without following symlinks. Every option can also be set by an environment "
        "variable EFSPURGE_<OPTION> (for example EFSPURGE_MAX_AGE_DAYS=7); the command line "
        "wins over the environment.",
        epilog="Exit codes: 0 done, 1 done with per-entry errors, 2 usage or configuration "
        "error, 3 fatal error, 4 --max-delete reached, 5 --max-runtime reached, 6 metrics not "
        "published (with --fail-on-push-error), "
        "129 hung up (SIGHUP: the terminal closed; not under nohup), 130 interrupted (SIGINT), "
        "141 stdout closed, 143 terminated (SIGTERM).",
    )
    parser.add_argument(
        "path", nargs="?", default=None, help=f"root directory to purge (or {PATH_ENV})"
    )
    for spec in OPTIONS:
        if spec.parse.__name__ == "parse_bool":
            parser.add_argument(
                spec.flag,
                dest=spec.field,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{HELP[spec.field]} [{spec.env}]",
            )
        else:
            parser.add_argument(
                spec.flag,
                dest=spec.field,
                type=_argparse_type(spec.parse),
                default=None,
                action="append" if spec.multiple else "store",
                metavar=METAVARS.get(spec.field),
                help=f"{HELP[spec.field]} [{spec.env}"
                + (", comma-separated]" if spec.multiple else "]"),
            )
    parser.add_argument("--version", action="version", version=f"efspurge {__version__}")
    return parser


def _attach_dash_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--max-runtime -5m`` as ``--max-runtime=-5m``: argparse takes a value that starts with
    '-' (and is not a plain negative number) for a flag, and says only "expected one
    argument". Attached, the value gets the option's own message ("must not be negative"), and
    a pattern such as ``--exclude -n`` (a file named -n) works. A word that starts with ``--``
    is never taken as a value: ``--exclude-dir --dry_run`` (a missing value, then a misspelled
    flag) must stop with an error, not exclude "--dry_run" and delete for real."""
    takes_value = {
        flag
        for action in parser._actions
        if action.nargs is None and action.option_strings and action.type is not None
        for flag in action.option_strings
    }
    known = {flag for action in parser._actions for flag in action.option_strings}
    out: list[str] = []
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            out.extend(words[i:])
            break
        following = words[i + 1] if i + 1 < len(words) else None
        if (
            word in takes_value
            and following is not None
            and following.startswith("-")
            and not following.startswith("--")  # a flag, maybe misspelled: never a value
            and following.partition("=")[0] not in known
        ):
            out.append(f"{word}={following}")
            i += 2
            continue
        out.append(word)
        i += 1
    return out


def _blocking_stdout() -> None:
    """A stdout left non-blocking by whoever started us (it happens with some supervisors)
    fails a write with EAGAIN whenever its reader lags, and the record, the final one too,
    is silently lost (measured: 285 of 3,000 DEBUG records arrived, exit 0). The records are
    the run's report: wait for the reader instead."""
    global _MADE_BLOCKING
    try:
        fd = sys.stdout.fileno()
        if not os.get_blocking(fd):
            os.set_blocking(fd, True)
            _MADE_BLOCKING = fd  # given back at exit: the flag is shared with our starter
    except (AttributeError, OSError, ValueError):
        pass  # no stdout, or not a file: nothing to change


_MADE_BLOCKING: int | None = None


def _fail(message: str) -> int:
    print(f"efspurge: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _os_error(exc: OSError) -> str:
    return exc.strerror or str(exc)


def refuse_root(raw_path: str) -> None:
    """Raise SettingsError (one line) if the root, symlinks resolved, is a refused path."""
    from efspurge.rootcheck import refusal_reason
    from efspurge.settings import SettingsError

    try:
        resolved = os.path.realpath(raw_path, strict=False)
    except OSError as exc:  # e.g. /proc/1/root: the link itself cannot be read
        raise SettingsError(f"PATH: {raw_path!r} cannot be resolved: {_os_error(exc)}") from None
    reason = refusal_reason(resolved)
    if reason is not None:
        via = "" if resolved == raw_path else f" (resolved to {resolved!r})"
        raise SettingsError(f"PATH: refusing to purge {raw_path!r}{via}: it {reason}")


def _import_asyncio_without_tls() -> None:
    """Import asyncio without the ssl module it loads for TLS streams, which efspurge never
    opens: ~10 ms, a tenth of the start-up (``python -X importtime``), on every run. asyncio
    takes a failed ``import ssl`` as "no TLS". The block is lifted at once: a Pushgateway over
    https imports ssl later, as usual (http.client)."""
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # makes `import ssl` fail
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]


def _given_as(cli_value: object, flag: str) -> str:
    """The name a message should use for an option's value: the flag if it was given on the
    command line, else its environment variable (the only other source)."""
    return flag if cli_value is not None else "EFSPURGE_" + flag[2:].upper().replace("-", "_")


def main(argv: Sequence[str] | None = None) -> int:
    signals.install_early()  # first: a SIGTERM from now on stops the run, with its record
    _blocking_stdout()
    _import_asyncio_without_tls()
    import asyncio

    from efspurge.jsonlog import setup_logging
    from efspurge.purger import AsyncPurger, StopRelay
    from efspurge.resolve import resolve_settings
    from efspurge.roots import check_metrics_file, open_manifest, prepare_root
    from efspurge.settings import SettingsError
    from efspurge.stats import StopReason
    from efspurge.terminal import TerminalUI, choose_format

    parser = build_parser()
    args = parser.parse_args(_attach_dash_values(parser, sys.argv[1:] if argv is None else argv))
    try:
        settings: Settings = resolve_settings(vars(args), os.environ)
    except SettingsError as exc:
        return _fail(str(exc))
    fmt, live = choose_format(settings.log_format)
    ui = (
        TerminalUI(settings.dry_run, live, text_logs=fmt == "text")
        if (fmt == "text" or live)
        else None
    )
    relay = StopRelay()  # a closed stdout stops the run, as SIGPIPE would
    lost: list[bool] = []

    def output_lost(closed: bool) -> None:
        # The reader went away (exit 141, as SIGPIPE would), or the output failed (a full
        # disk behind `> run.log`: exit 3): either way the run stops, since nothing it does
        # from here on could be reported.
        lost.append(closed)
        relay(StopReason.STDOUT_CLOSED if closed else StopReason.OUTPUT_FAILED)

    logger = setup_logging(
        settings.log_level,
        handler=ui.log_handler() if fmt == "text" else None,
        on_output_lost=output_lost,
        owns_stdout=True,
    )
    try:
        refuse_root(settings.path)
        check_metrics_file(settings, _given_as(args.metrics_file, "--metrics-file"))
        root = prepare_root(settings.path, settings.reads_atime)
        manifest = open_manifest(settings, _given_as(args.manifest, "--manifest"))
    except SettingsError as exc:
        return _fail(str(exc))
    except OSError as exc:  # anything else about the root: one line, not a traceback
        return _fail(f"PATH: {settings.path!r} cannot be used: {_os_error(exc)}")
    try:
        purger = AsyncPurger.from_settings(settings, root, logger, manifest, ui, relay)
        outcome = asyncio.run(purger.run())
    except Exception as exc:  # a bug or a broken environment: say so in one record
        logger.critical("Purge failed", exc_info=True, extra={"extra_fields": {"error": repr(exc)}})
        return EXIT_FATAL
    if lost and not lost[0] and outcome.exit_code in (0, 1):
        return EXIT_FATAL  # the output failed at the end: the final record is lost
    return outcome.exit_code


def entry() -> NoReturn:
    """The ``efspurge`` command: :func:`main`, then a quick exit.

    Everything the run writes is written and closed by then (the final record, the manifest,
    the metrics; the workers are reaped), so the interpreter's teardown (freeing every module
    and object one by one, ~50 ms here: 5 % of a 100,000-file run) is skipped. Only what sits
    in the standard streams' buffers is left, and it is flushed first."""
    code = main()
    import logging

    logging.shutdown()
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed stdout (exit 141)
            stream.flush()
    if _MADE_BLOCKING is not None:
        with contextlib.suppress(OSError):
            os.set_blocking(_MADE_BLOCKING, False)
    os._exit(code)
