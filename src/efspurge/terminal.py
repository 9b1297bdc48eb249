"""Terminal mode: a live progress display, readable log lines and a summary at the end.

Used when a person is watching (see ``choose_format``); containers and pipes keep the JSON
lines of the reference, unchanged. rich is imported only here, and only in terminal mode:
it gives the live display, the log rendering and the tables from one library.
"""

from __future__ import annotations

import datetime
import errno
import logging
import sys
from typing import Any

from efspurge.jsonlog import valid_text

MIB = 1024 * 1024


def choose_format(requested: str) -> tuple[str, bool]:
    """(record format on stdout, whether to show the live display on stderr).

    auto: readable text when stdout is a terminal, JSON lines otherwise. With JSON lines on
    stdout, the live display still appears when stderr is a terminal (for example
    ``efspurge ... > run.jsonl``): it never mixes into the records.
    """
    stdout_tty = sys.stdout.isatty()
    stderr_tty = sys.stderr.isatty()
    fmt = requested if requested != "auto" else ("text" if stdout_tty else "json")
    live = stdout_tty if fmt == "text" else stderr_tty
    return fmt, live


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _printable(value: Any) -> Any:
    """A name as a terminal may show it: the bytes of an undecodable name as the JSON
    records show them (jsonlog.valid_text), then control characters as escapes (an escape
    sequence in a file name would drive the operator's terminal, a newline forge a record)."""
    if not isinstance(value, str) or value.isprintable():
        return value
    return "".join(c if c.isprintable() else _escape(c) for c in valid_text(value))


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


# The start record carries every setting; a person wants these.
_START_FIELDS = (
    "root", "max_age_days", "cutoff", "dry_run", "remove_empty_dirs", "filesystem_type",
    "io_threads",
)  # fmt: skip


class _TextFormatter(logging.Formatter):
    """The message, then the structured fields as key=value (the JSON record, readable)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "extra_fields", {}) or {}
        message = record.getMessage()
        if message == "Purge operation completed":
            return message  # the summary table says the rest
        if message == "Starting purge operation":
            fields = {k: fields[k] for k in _START_FIELDS if k in fields}
        shown = " ".join(
            f"{k}={_printable(v)}" for k, v in fields.items() if not isinstance(v, dict)
        )
        return f"{record.getMessage()}  {shown}".rstrip()


class _PlainTextFormatter(_TextFormatter):
    """The text record as one line: ISO 8601 time with its UTC offset, level, then the text."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created).astimezone()
        text = super().format(record)
        return f"{stamp.isoformat(timespec='milliseconds')} {record.levelname} {text}"


class TerminalUI:
    def __init__(self, dry_run: bool, live: bool, text_logs: bool) -> None:
        from rich.console import Console

        class _Console(Console):
            def on_broken_pipe(self) -> None:
                # rich's default exits the process (SystemExit(1), mid-run, with a traceback
                # from the logging call). Go quiet and raise what the log handler expects: it
                # silences the output and tells the engine (jsonlog's broken-pipe guard).
                self.quiet = True
                raise BrokenPipeError(errno.EPIPE, "the output was closed")

        # Text mode writes to stdout (it is the terminal); a display beside JSON lines goes
        # to stderr so the records stay clean.
        self.console = _Console(file=sys.stdout if text_logs else sys.stderr)
        self.dry_run = dry_run
        self.show_live = live
        self.text_logs = text_logs
        self._live = None

    def log_handler(self) -> logging.Handler:
        if not self.console.is_terminal:
            # --log-format text into a file or a log collector: one line per record with a
            # full timestamp (rich wraps at 80 columns and shows a time once per second).
            plain = logging.StreamHandler(self.console.file)
            plain.setFormatter(_PlainTextFormatter())
            return plain
        from rich.logging import RichHandler

        handler = RichHandler(
            console=self.console, show_path=False, markup=False, rich_tracebacks=False
        )
        handler.setFormatter(_TextFormatter())
        return handler

    # --- the live display -------------------------------------------------------------------

    def start(self) -> None:
        if not self.show_live:
            return
        from rich.live import Live

        self._live = Live(
            self._render({}), console=self.console, refresh_per_second=4, transient=True
        )
        self._live.start()

    def update(self, snapshot: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.update(self._render(snapshot))

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _render(self, s: dict[str, Any]):
        from rich.table import Table

        verb = "would delete" if self.dry_run else "deleted"
        table = Table.grid(padding=(0, 2))
        table.add_row(
            "[bold]efspurge[/]" + (" [yellow](dry run)[/]" if self.dry_run else ""),
            f"elapsed {s.get('elapsed_seconds', 0):.0f} s",
            f"memory {s.get('memory_mb', 0):.0f} MB",
        )
        table.add_row(
            f"dirs scanned {s.get('dirs_scanned', 0):,}",
            f"files scanned {s.get('files_scanned', 0):,}",
            f"{s.get('files_per_second', 0):,.0f} files/s",
        )
        if s.get("ops_per_second_limit"):
            table.add_row(
                f"{s.get('ops_per_second', 0):,.0f} ops/s",
                f"limit {s['ops_per_second_limit']:,.0f} ops/s",
                f"waited {s.get('rate_limit_wait_seconds', 0):,.1f} s for it",
            )
        selected = s.get("files_to_purge", 0) if self.dry_run else s.get("files_purged", 0)
        size = s.get("bytes_to_purge", 0) if self.dry_run else s.get("bytes_freed", 0)
        table.add_row(
            f"files {verb} {selected:,}",
            f"{'would free' if self.dry_run else 'freed'} {_size(size)}",
            f"errors {s.get('errors', 0):,}",
        )
        return table

    # --- the summary ----------------------------------------------------------------------

    def summary(self, record: dict[str, Any]) -> None:
        from rich.table import Table

        self.stop()
        dry = record.get("dry_run")
        title = "Dry run summary: nothing was deleted" if dry else "Purge summary"
        if record.get("interrupted"):
            title += f" (stopped early: {record.get('stop_reason')})"
        # min_width: a narrow table (small counts) would wrap its title onto two lines.
        main = Table(title=title, show_header=False, title_justify="left", min_width=len(title) + 4)
        main.add_column(style="bold")
        main.add_column(justify="right")
        rows = [
            ("files scanned", f"{record['files_scanned']:,}"),
            ("dirs scanned", f"{record['dirs_scanned']:,}"),
            ("files to delete" if dry else "files deleted",
             f"{record['files_to_purge'] if dry else record['files_purged']:,}"),
            ("space to free" if dry else "space freed",
             _size(record["bytes_to_purge"] if dry else record["bytes_freed"])),
            ("empty dirs to remove" if dry else "empty dirs removed",
             f"{record['empty_dirs_to_delete'] if dry else record['empty_dirs_deleted']:,}"),
            ("errors", f"{record['errors']:,}"),
            ("duration", f"{record['duration_seconds']:.1f} s"),
            ("rate", f"{record['files_per_second']:,.0f} files/s"),
            ("peak memory", f"{record['peak_memory_mb']:.0f} MB"),
            ("exit code", str(record.get("exit_code"))),
        ]  # fmt: skip
        for label, value in rows:
            main.add_row(label, value)
        self.console.print(main)
        self._breakdown("by top-level directory", record.get("by_top_level_dir", {}), dry)
        self._breakdown("by age", record.get("by_age", {}), dry)

    def _breakdown(self, title: str, cells: dict[str, dict[str, int]], dry: bool) -> None:
        if not cells:
            return
        from rich.table import Table

        self.console.print(f"[bold]{'Would be deleted' if dry else 'Deleted'}, {title}[/]")
        table = Table()
        table.add_column("")
        table.add_column("files", justify="right")
        table.add_column("size", justify="right")
        from rich.text import Text

        for name, cell in cells.items():
            # As Text: a directory named '[red]' or '[/]' is a name, not rich markup.
            table.add_row(Text(_printable(name)), f"{cell['files']:,}", _size(cell["bytes"]))
        self.console.print(table)
