"""What the walk tells the user about single entries: errors, skips, decisions, the manifest.

Paths are built here, and only here, from a node's chain of names: only for messages. Warnings
about entries are capped (``error_log_limit``); every error is counted all the same.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from efspurge import manifest as manifest_format
from efspurge.manifest import Manifest
from efspurge.policy import iso_utc
from efspurge.stats import Counters, StopReason
from efspurge.tree import DirNode

ERROR_LOG_LIMIT = 1000


class EventLog:
    def __init__(
        self,
        logger: logging.Logger,
        root_path: str,
        dry_run: bool,
        manifest: Manifest | None = None,
        error_log_limit: int | None = None,
    ) -> None:
        self.log = logger
        self.root_path = root_path
        self.dry_run = dry_run
        self.manifest = manifest
        self.debug = logger.isEnabledFor(logging.DEBUG)
        self._warnings_left = ERROR_LOG_LIMIT if error_log_limit is None else error_log_limit
        self._said_once: set[str] = set()
        self.manifest_failed = False
        self.stop: Callable[[StopReason], None] | None = None  # set by the walk state
        self.why_kept: Callable[[os.stat_result], str] | None = None  # the age policy's words
        self._internal_errors: set[str] = set()  # logged once each

    # --- paths, only for messages -------------------------------------------------------------

    def path_of(self, node: DirNode | None, name: str | None = None) -> str:
        parts = [] if name is None else [name]
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        parts.append(self.root_path)
        return os.path.join(*reversed(parts))

    @staticmethod
    def relpath_of(node: DirNode, name: str | None = None) -> str:
        parts = [] if name is None else [name]
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(reversed(parts))

    # --- warnings, capped ---------------------------------------------------------------------

    def _warn(self, message: str, fields: dict[str, Any]) -> None:
        self._warnings_left -= 1
        if self._warnings_left >= 0:
            self.log.warning(message, extra={"extra_fields": fields})
        if self._warnings_left == 0:
            self.log.warning(
                "Error log limit reached: further problems are counted but not logged",
                extra={"extra_fields": {}},
            )

    def entry_error(
        self, c: Counters, node: DirNode, name: str | None, op: str, exc: OSError
    ) -> None:
        c.errors += 1
        self._warn(
            f"{op} failed, skipping",
            {
                "path": self.path_of(node, name),
                "operation": op,
                "errno": exc.errno,
                "error": exc.strerror or str(exc),
            },
        )

    def limit_reached(self, message: str, fields: dict[str, Any]) -> None:
        """A cap was reached: said once, at WARNING, outside the warning limit (only the
        final record's counts said so before, and nothing at all for the empty-directory
        cap, whose run exits 0)."""
        self._warn_once(message, fields)

    def _warn_once(self, message: str, fields: dict[str, Any]) -> None:
        if message not in self._said_once:
            self._said_once.add(message)
            self.log.warning(message, extra={"extra_fields": fields})

    def exclude_names_dir(self, node: DirNode, name: str) -> None:
        """An --exclude pattern matches a directory, which --exclude does not keep: said
        once a run, at WARNING, since its old files are purged (found by review: rsync's and
        tar's --exclude NAME also skip a directory)."""
        self._warn_once(
            "An --exclude pattern matches a directory, which is walked and purged all the "
            "same: --exclude keeps files only; to keep a directory and all it holds, use "
            "--exclude-dir",
            {"path": self.path_of(node, name)},
        )

    def changed(self, node: DirNode, reason: BaseException | None) -> None:
        self._warn(
            "Directory changed during the walk, not followed",
            {"path": self.path_of(node), "reason": str(reason)},
        )

    def mount_point(self, node: DirNode, reason: BaseException | None) -> None:
        self.log.info(
            "Mount point not entered (another filesystem)",
            extra={"extra_fields": {"path": self.path_of(node), "reason": str(reason)}},
        )

    @property
    def had_internal_error(self) -> bool:
        return bool(self._internal_errors)

    def internal_error(self, exc: BaseException) -> None:
        # The same error from several batches (a dead worker fails each batch it held) is
        # one record.
        if repr(exc) in self._internal_errors:
            return
        self._internal_errors.add(repr(exc))
        self.log.critical(
            "Internal error, stopping",
            exc_info=exc,
            extra={"extra_fields": {"error": repr(exc)}},
        )

    # --- decisions, at DEBUG ------------------------------------------------------------------

    def kept(self, node: DirNode | None, name: str | None, reason: str) -> None:
        if self.debug:
            self.log.debug(
                "Kept", extra={"extra_fields": {"path": self.path_of(node, name), "reason": reason}}
            )

    def file_decision(self, node: DirNode, name: str, what: str, st: os.stat_result) -> None:
        if not self.debug:
            return
        if what == "kept":
            why = self.why_kept(st) if self.why_kept else "not older than the cutoff"
            self.kept(node, name, why)
            return
        self.log.debug(
            "Would delete file" if self.dry_run else "Deleted file",
            extra={
                "extra_fields": {
                    "path": self.path_of(node, name),
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "mtime": iso_utc(st.st_mtime_ns),
                }
            },
        )

    def dir_removed(self, node: DirNode) -> None:
        if self.manifest is not None:
            action = manifest_format.WOULD_RMDIR if self.dry_run else manifest_format.RMDIR
            line = manifest_format.dir_line(action, self.relpath_of(node))
            self.manifest_lines([line])
        if self.debug:
            self.log.debug(
                "Would remove empty directory" if self.dry_run else "Removed empty directory",
                extra={"extra_fields": {"path": self.path_of(node)}},
            )

    # --- the audit manifest -------------------------------------------------------------------

    def manifest_lines(self, lines: list[str]) -> None:
        """Write a batch's lines. If the manifest cannot be written, the run stops deleting
        (an audit trail with holes is worse than a late purge), and the lines that could not
        be written go to the log, so that no deletion is recorded nowhere."""
        assert self.manifest is not None
        unrecorded = lines
        if not self.manifest_failed:
            try:
                self.manifest.write(lines)
                return
            except OSError as exc:
                self.manifest_failed = True
                unrecorded = list(getattr(exc, "unwritten", lines))
                self.log.error(
                    "Manifest cannot be written: stopping; unrecorded lines follow in the log",
                    extra={"extra_fields": {"errno": exc.errno, "error": exc.strerror or str(exc)}},
                )
                if self.stop is not None:
                    self.stop(StopReason.MANIFEST)
        for line in unrecorded:
            self.log.error("Unrecorded manifest line", extra={"extra_fields": {"line": line}})
