"""The concurrent walk: what each I/O worker thread does with an item of the work queue.

A worker takes either a directory (open it if new, then list one batch of its entries) or a
chunk of listed regular files (lstat each, delete the expired ones). System calls go through
:mod:`efspurge.fsops`; decisions come from :mod:`efspurge.policy`.

Post-order bookkeeping. Every directory node counts what still holds it open:

* ``own_work``: its listing (1 until the listing is exhausted) plus its unprocessed chunks;
* ``unopened``: child directories listed but not yet opened (opening needs this descriptor);
* ``borrowers``: children being removed right now with this descriptor;
* ``children``: child directories not yet finished.

When all four reach zero the directory is finished: with ``--remove-empty-dirs`` it is removed
if nothing was kept in it, then its parent is told, which may finish the parent in turn, so a
chain emptied by the purge disappears in one run, children strictly before parents. The root
is never removed.

Descriptors. A directory whose own work is done but whose children are still running keeps its
descriptor only while the number of open directories is under ``park_threshold``; above it the
descriptor is closed ("parked"), and reopened through ``..`` of a child, checked by identity,
if that child is removed. So a chain 100,000 levels deep does not need 100,000 descriptors.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from bisect import bisect_right

from efspurge import fsops, manifest
from efspurge.manifest import Manifest
from efspurge.policy import AgePolicy
from efspurge.selection import Selector
from efspurge.shard import Shard, child_key
from efspurge.stats import Counters, age_edges
from efspurge.workqueue import WorkQueue

_NOT_EMPTY = frozenset({errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY})

# What became of a finished directory, as its parent needs to know.
REMOVED = "removed"  # removed by this run (or, in a dry run, would be)
GONE = "gone"  # no longer there, removed by someone else (another shard, a user)
KEPT = "kept"  # stays: something in it stays, or a rail kept it
BUSY = "busy"  # rmdir said not empty: another shard or a writer still has entries in it


class DirNode:
    """One directory of the walk, alive from its listing until it is finished."""

    __slots__ = (
        "borrowers",
        "children",
        "entries",
        "fd",
        "kept",
        "key",
        "name",
        "own_work",
        "parent",
        "st",
        "top",
        "touched",
        "unopened",
    )

    def __init__(self, name: str, parent: DirNode | None, key: int = 0) -> None:
        self.name = name
        self.parent = parent
        self.key = key  # running CRC of the relative path, for the shard partition
        # The top-level directory this one is in, for the report ("." for the root itself).
        self.top = "." if parent is None else (name if parent.parent is None else parent.top)
        self.fd: int | None = None
        self.st: os.stat_result | None = None
        self.entries = None  # the scandir iterator while the listing is open
        self.own_work = 1
        self.unopened = 0
        self.borrowers = 0
        self.children = 0
        self.kept = False  # something stays inside: the directory cannot be removed
        self.touched = False  # this run removed entries from it: restore its times when done

    def holds(self) -> int:
        return self.own_work + self.unopened + self.borrowers


class Chunk:
    """Listed regular files of one directory, processed by one worker in one go."""

    __slots__ = ("entries", "node")

    def __init__(self, node: DirNode, entries: list[os.DirEntry[str]]) -> None:
        self.node = node
        self.entries = entries


class Walker:
    def __init__(
        self,
        *,
        root_path: str,
        root_fd: int,
        root_st: os.stat_result,
        policy: AgePolicy,
        dry_run: bool,
        remove_empty_dirs: bool,
        max_empty_dirs: int,
        batch_size: int,
        chunk_size: int,
        park_threshold: int,
        logger: logging.Logger,
        selector: Selector | None = None,
        one_file_system: bool = True,
        mount_paths: frozenset[str] = frozenset(),
        max_delete: int = 0,
        keep_young_dirs: bool = False,
        shard: Shard | None = None,
        manifest: Manifest | None = None,
        now_ns: int | None = None,
        listing_events: bool = True,
        error_log_limit: int = 1000,
    ) -> None:
        self.root_path = root_path
        self.policy = policy
        self.dry_run = dry_run
        self.remove_empty_dirs = remove_empty_dirs
        self.max_empty_dirs = max_empty_dirs
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.park_threshold = park_threshold
        self.log = logger
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self.selector = selector if selector is not None else Selector()
        self.one_file_system = one_file_system
        # Mount points below the root known at start (from mountinfo): catches bind mounts of
        # the root's own device, which a device comparison cannot see.
        self.mount_paths = mount_paths
        self.max_delete = max_delete
        self.keep_young_dirs = keep_young_dirs
        self.shard = shard if shard is not None else Shard()
        self.manifest = manifest
        # In a --processes run every process lists every directory; only process 0 counts and
        # logs what the listing finds (directories, symlinks, exclusions, directory errors).
        # The others count those into a sink that is never reported.
        self.listing_events = listing_events
        self._muted = Counters()
        self.age_edges = age_edges(now_ns if now_ns is not None else time.time_ns())
        self._deletes_reserved = 0
        self.stop_reason: str | None = None

        self.root = DirNode("", None)
        self.root.fd = root_fd
        self.root.st = root_st
        self._tree_lock = threading.Lock()
        self._open_nodes: set[DirNode] = {self.root}
        self._dirs_reserved = 0  # empty-dir removals reserved, dry run or real
        self._stop = False
        self._error_logs_left = error_log_limit
        self.counters: list[Counters] = []
        self.queue: WorkQueue | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def attach(self, queue: WorkQueue) -> None:
        self.queue = queue

    def listing_want(self, node: DirNode) -> int:
        """Entries to grant a listing step. Most directories are small, so a first visit asks
        for little; a directory still being listed has proven big and gets a full batch."""
        return self.batch_size if node.entries is not None else min(self.batch_size, 512)

    def request_stop(self, reason: str = "stopped") -> None:
        """Stop handing out work; the first reason given is the one reported."""
        with self._tree_lock:
            if self.stop_reason is None:
                self.stop_reason = reason
        self._stop = True
        if self.queue is not None:
            self.queue.stop()

    def worker_loop(self) -> None:
        """Runs in an I/O thread until the queue says exit."""
        queue = self.queue
        assert queue is not None
        counters = Counters()
        with self._tree_lock:
            self.counters.append(counters)
        queue.worker_started()
        try:
            while (taken := queue.get()) is not None:
                item, grant = taken
                released = grant
                try:
                    if type(item) is Chunk:
                        released = len(item.entries)
                        self._run_chunk(item, counters)
                    else:
                        released = self._list_step(item, grant, counters)
                except BaseException as exc:  # a bug: stop the run, never half-continue
                    self.log.critical(
                        "Internal error in a worker, stopping",
                        exc_info=True,
                        extra={"extra_fields": {"error": repr(exc)}},
                    )
                    self.request_stop("internal error")
                finally:
                    queue.done(released)
        finally:
            queue.worker_exited()

    def close_all(self) -> None:
        """After the workers exited: close every descriptor and listing still open."""
        assert self.queue is not None
        self.queue.drain()
        with self._tree_lock:
            nodes = list(self._open_nodes)
            self._open_nodes.clear()
        for node in nodes:
            if node.entries is not None:
                fsops.close_scan(node.entries)
                node.entries = None
            if node.fd is not None:
                fsops.close(node.fd)
                node.fd = None

    # --- paths, only for messages ---------------------------------------------------------

    def relpath_of(self, node: DirNode, name: str | None = None) -> str:
        """The path relative to the root, as selection patterns see it."""
        parts = [] if name is None else [name]
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(reversed(parts))

    def path_of(self, node: DirNode, name: str | None = None) -> str:
        parts = [] if name is None else [name]
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        parts.append(self.root_path)
        return os.path.join(*reversed(parts))

    def _entry_error(
        self, c: Counters, node: DirNode, name: str | None, op: str, exc: OSError
    ) -> None:
        if c is self._muted:
            return
        c.errors += 1
        with self._tree_lock:
            self._error_logs_left -= 1
            left = self._error_logs_left
        if left >= 0:
            self.log.warning(
                f"{op} failed, skipping",
                extra={
                    "extra_fields": {
                        "path": self.path_of(node, name),
                        "operation": op,
                        "errno": exc.errno,
                        "error": exc.strerror or str(exc),
                    }
                },
            )
        if left == 0:
            self.log.warning(
                "Error log limit reached: further errors are counted but not logged",
                extra={"extra_fields": {}},
            )

    # --- directories ----------------------------------------------------------------------

    def _list_step(self, node: DirNode, grant: int, c: Counters) -> int:
        """List at most ``grant`` entries of ``node``. Returns the budget to give back."""
        lc = c if self.listing_events else self._muted  # where listing events are counted
        if node.entries is None and not self._start_listing(node, c, lc):
            return grant

        kept = False
        try:
            entries = fsops.read_entries(node.entries, grant)
        except OSError as exc:
            self._entry_error(lc, node, None, "list directory", exc)
            entries, kept = [], True
            exhausted = True
        else:
            exhausted = len(entries) < grant

        files, dirs, others = fsops.sort_entries(entries)
        selector = self.selector
        if selector.filters_files or selector.filters_dirs:
            files, dirs, excluded = self._select(node, files, dirs, lc)
            kept = kept or excluded
        if self.shard.active:
            files, theirs_stay = self._own_files(node, files, lc)
            kept = kept or theirs_stay
            subdirs = [DirNode(e.name, node, child_key(node.key, e.name)) for e in dirs]
        else:
            subdirs = [DirNode(entry.name, node) for entry in dirs]
        for entry, kind in others:
            if isinstance(kind, OSError):
                if kind.errno == errno.ENOENT:
                    lc.entries_vanished += 1
                    continue
                self._entry_error(lc, node, entry.name, "lstat", kind)
            elif kind == fsops.SYMLINK:
                lc.symlinks_skipped += 1
            else:
                lc.special_files_skipped += 1
            kept = True
            if self._debug and self.listing_events:
                self._debug_kept(node, entry.name, "symlink or special file, never followed")

        if exhausted:
            fsops.close_scan(node.entries)
            node.entries = None

        size = self.chunk_size
        chunks = [Chunk(node, files[i : i + size]) for i in range(0, len(files), size)]
        with self._tree_lock:
            node.own_work += len(chunks)
            node.unopened += len(subdirs)
            node.children += len(subdirs)
            if kept:
                node.kept = True

        queue = self.queue
        assert queue is not None
        # The continuation goes in first so that the children, on top, are walked first.
        later = [node] if not exhausted else []
        queue.put(dirs=later + subdirs, chunks=chunks[1:])
        # Keep only the share of the budget that this thread's own chunk still holds: the rest
        # goes back now, so other directories can be listed while this chunk is processed.
        inline = len(chunks[0].entries) if chunks else 0
        queue.release(grant - inline - sum(len(ch.entries) for ch in chunks[1:]))
        if chunks:
            # The first chunk is processed right here: on a local disk, where one thread does
            # everything, this saves a trip through the queue for every batch.
            self._run_chunk(chunks[0], c)
        if exhausted:
            self._settle(node, c, own=-1)
        return inline

    def _own_files(
        self, node: DirNode, files: list[os.DirEntry[str]], lc: Counters
    ) -> tuple[list[os.DirEntry[str]], bool]:
        """This shard's files, and whether another shard's file will stay (dry runs only).

        Other shards' files are neither stat'ed nor counted, and do not keep the directory:
        their owner deletes them, and rmdir tells whether they are gone.
        """
        shard = self.shard
        owners = [shard.owner(node.key, e.name) for e in files]
        mine = [e for e, owner in zip(files, owners, strict=True) if owner == shard.index]
        group = shard.index // shard.group
        lc.files_other_shards += sum(1 for owner in owners if owner // shard.group != group)
        theirs_stay = False
        if self.dry_run and self.remove_empty_dirs and len(mine) < len(files):
            # A real run lets rmdir tell whether the other shards emptied a directory; a dry
            # run has no such arbiter, so it looks at their files itself.
            theirs = [e for e, owner in zip(files, owners, strict=True) if owner != shard.index]
            theirs_stay = self._any_stays(theirs)
        return mine, theirs_stay

    def _any_stays(self, entries: list[os.DirEntry[str]]) -> bool:
        """Would any of these files (another shard's) survive a real run? Dry runs only."""
        for entry in entries:
            try:
                st = fsops.lstat_entry(entry)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue
                return True
            if not stat.S_ISREG(st.st_mode) or not self.policy.is_expired(st):
                return True
        return False

    def _select(
        self,
        node: DirNode,
        files: list[os.DirEntry[str]],
        dirs: list[os.DirEntry[str]],
        c: Counters,
    ) -> tuple[list[os.DirEntry[str]], list[os.DirEntry[str]], bool]:
        """Apply --include/--exclude to files and --exclude-dir to directories."""
        selector = self.selector
        base = self.relpath_of(node) if selector.needs_path else None

        def rel(name: str) -> str | None:
            if base is None:
                return None
            return f"{base}/{name}" if base else name

        chosen_files, chosen_dirs = files, dirs
        if selector.filters_files:
            chosen_files = [e for e in files if selector.file_selected(e.name, rel(e.name))]
            c.files_excluded += len(files) - len(chosen_files)
        if selector.filters_dirs:
            chosen_dirs = [e for e in dirs if not selector.dir_excluded(e.name, rel(e.name))]
            c.dirs_excluded += len(dirs) - len(chosen_dirs)
        if self._debug and self.listing_events:
            for entry in files + dirs:
                if entry not in chosen_files and entry not in chosen_dirs:
                    self._debug_kept(node, entry.name, "excluded by a pattern")
        excluded = len(chosen_files) < len(files) or len(chosen_dirs) < len(dirs)
        return chosen_files, chosen_dirs, excluded

    def _start_listing(self, node: DirNode, c: Counters, lc: Counters) -> bool:
        """Open a directory (the root is open already) and start its listing.

        Returns False when there is nothing to list: the node is then already settled.
        """
        parent = node.parent
        if parent is not None:
            opened = self._open_child(node, lc)
            if not isinstance(opened, tuple):
                # Not entered: finished at once. A vanished directory no longer keeps its
                # parent from being empty; anything else does.
                node.kept = opened != GONE
                with self._tree_lock:
                    parent.unopened -= 1
                    if node.kept:
                        parent.kept = True
                    node.own_work = 0
                self._release_parent(node, c, removed=not node.kept)
                return False
            node.fd, node.st = opened
            with self._tree_lock:
                self._open_nodes.add(node)
            self._settle(parent, c, unopened=-1)
        try:
            node.entries = fsops.scan(node.fd)
        except OSError as exc:
            self._entry_error(lc, node, None, "list directory", exc)
            node.kept = True
            self._settle(node, c, own=-1)
            return False
        lc.dirs_scanned += 1
        return True

    def _open_child(self, node: DirNode, c: Counters) -> tuple[int, os.stat_result] | str:
        """Open a listed subdirectory with every check; (fd, stat), or GONE / KEPT."""
        parent = node.parent
        assert parent is not None and parent.fd is not None  # held open by `unopened`
        try:
            # Paths are built only when needed: on a chain 10,000 deep, building one for every
            # directory would cost O(depth^2).
            if self.one_file_system and self.mount_paths and self.path_of(node) in self.mount_paths:
                raise fsops.OtherFilesystem("a mount point (bind mount)")
            same_dev = self.root.st.st_dev if self.one_file_system else None
            return fsops.open_subdir(parent.fd, node.name, same_dev)
        except fsops.OtherFilesystem as exc:
            c.mount_points_skipped += 1
            if c is not self._muted:
                self.log.info(
                    "Mount point not entered (another filesystem)",
                    extra={"extra_fields": {"path": self.path_of(node), "reason": str(exc)}},
                )
        except fsops.DirectoryChanged as exc:
            c.dirs_skipped_changed += 1
            if c is not self._muted:
                self.log.warning(
                    "Directory changed during the walk, not followed",
                    extra={"extra_fields": {"path": self.path_of(node), "reason": str(exc)}},
                )
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                c.entries_vanished += 1
                return GONE
            self._entry_error(c, node, None, "open directory", exc)
        return KEPT

    # --- files ----------------------------------------------------------------------------

    def _run_chunk(self, chunk: Chunk, c: Counters) -> None:
        kept = self._process_files(chunk.node, chunk.entries, c)
        if kept:
            with self._tree_lock:
                chunk.node.kept = True
        self._settle(chunk.node, c, own=-1)

    def _process_files(self, node: DirNode, entries: list[os.DirEntry[str]], c: Counters) -> bool:
        """lstat each file, delete the expired ones. Returns True if any file stays.

        This is the per-file hot loop: names are bound locally and counts are kept in locals
        and added to the thread's counters once per chunk.
        """
        fd = node.fd
        dry_run = self.dry_run
        debug = self._debug
        is_expired = self.policy.is_expired
        lstat = fsops.lstat_entry
        unlink = fsops.unlink_file
        is_reg = stat.S_ISREG
        capped = self.max_delete > 0
        kept = False
        scanned = selected = selected_bytes = purged = purged_bytes = 0
        timestamp = self.policy.timestamp
        edges = self.age_edges
        by_age = c.breakdown.by_age
        manifest_lines: list[str] | None = [] if self.manifest is not None else None
        rel_dir = self.relpath_of(node) if manifest_lines is not None else ""
        action = manifest.WOULD_DELETE if dry_run else manifest.DELETE
        try:
            for entry in entries:
                if self._stop:
                    kept = True  # the rest is left for the next run
                    break
                try:
                    st = lstat(entry)
                except OSError as exc:
                    kept = self._file_failed(c, node, entry.name, "lstat", exc) or kept
                    continue
                if not is_reg(st.st_mode):
                    kept = True  # replaced since the listing: not a file we decided on
                    continue
                scanned += 1
                if not is_expired(st):
                    kept = True
                    if debug:
                        self._debug_kept(node, entry.name, self.policy.why_kept(st))
                    continue
                if capped and not self._reserve_delete():
                    kept = True
                    break
                selected += 1
                selected_bytes += st.st_size
                cell = by_age[bisect_right(edges, timestamp(st))]  # the report: what was selected
                cell[0] += 1
                cell[1] += st.st_size
                try:
                    unlink(fd, entry.name, dry_run)
                except OSError as exc:
                    if capped:
                        self._release_delete()
                    kept = self._file_failed(c, node, entry.name, "unlink", exc) or kept
                    continue
                if not dry_run:
                    purged += 1
                    purged_bytes += st.st_size
                if manifest_lines is not None:
                    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                    manifest_lines.append(
                        manifest.file_line(action, rel, st.st_size, st.st_mtime_ns)
                    )
                if debug:
                    self._debug_deleted(node, entry.name, st)
        finally:
            if purged:
                node.touched = True
            top = c.breakdown.top(node.top)
            top[0] += selected
            top[1] += selected_bytes
            if manifest_lines:
                self.manifest.write(manifest_lines)
            c.files_scanned += scanned
            c.files_to_purge += selected
            c.bytes_to_purge += selected_bytes
            c.files_purged += purged
            c.bytes_freed += purged_bytes
        return kept

    def _restore_times(self, node: DirNode, fd: int | None) -> None:
        """When a directory this run removed entries from is finished (and stays), give it
        back its own timestamps. A parked directory (descriptor closed) keeps the new ones."""
        if node.st is None or fd is None:
            return
        try:
            fsops.restore_times(fd, node.st)
        except OSError as exc:  # not the owner (EPERM), read-only, vanished: the times stay
            if self._debug:
                self._debug_kept(node, None, f"timestamps not restored: {exc.strerror}")

    def _reserve_delete(self) -> bool:
        """Take one of the --max-delete slots before an unlink (dry run alike); when none is
        left, the run stops: the cap is never exceeded, however many threads delete."""
        with self._tree_lock:
            if self._deletes_reserved < self.max_delete:
                self._deletes_reserved += 1
                return True
        self.request_stop("max_delete")
        return False

    def _release_delete(self) -> None:
        with self._tree_lock:
            self._deletes_reserved -= 1

    def _file_failed(self, c: Counters, node: DirNode, name: str, op: str, exc: OSError) -> bool:
        """Count a failed call on a file. Returns True if the file may still be there."""
        if exc.errno == errno.ENOENT:
            c.entries_vanished += 1  # someone else removed it first: not an error
            return False
        self._entry_error(c, node, name, op, exc)
        return True

    def _debug_deleted(self, node: DirNode, name: str, st: os.stat_result) -> None:
        self.log.debug(
            "Would delete file" if self.dry_run else "Deleted file",
            extra={
                "extra_fields": {
                    "path": self.path_of(node, name),
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                }
            },
        )

    def _debug_kept(self, node: DirNode, name: str | None, reason: str) -> None:
        self.log.debug(
            "Kept", extra={"extra_fields": {"path": self.path_of(node, name), "reason": reason}}
        )

    # --- post-order completion ------------------------------------------------------------

    def _settle(self, node: DirNode, c: Counters, *, own: int = 0, unopened: int = 0) -> None:
        """Apply a change to what holds ``node``; finish it, or park its descriptor."""
        with self._tree_lock:
            node.own_work += own
            node.unopened += unopened
            if node.holds() or node.children:
                self._maybe_park(node)
                return
        self._finish(node, c)

    def _maybe_park(self, node: DirNode) -> None:
        # Caller holds the tree lock, so no borrower can pick up the descriptor meanwhile.
        if (
            node.parent is not None
            and node.fd is not None
            and node.holds() == 0
            and len(self._open_nodes) > self.park_threshold
        ):
            fsops.close(node.fd)
            node.fd = None
            self._open_nodes.discard(node)

    def _finish(self, node: DirNode, c: Counters) -> None:
        """Remove a finished directory if it is empty and allowed; then its parent may finish."""
        while node.parent is not None:
            outcome = self._remove_if_empty(node, c)
            if outcome != REMOVED and node.touched and not self.dry_run:
                self._restore_times(node, node.fd)
            with self._tree_lock:
                if node.fd is not None:
                    fsops.close(node.fd)
                    node.fd = None
                self._open_nodes.discard(node)
            # Not empty because another shard still works in it says nothing about whether
            # the parent will be empty in the end: with shards, only a real reason keeps it.
            keeps_parent = outcome == KEPT or (outcome == BUSY and not self.shard.active)
            parent = self._release_parent(node, c, removed=not keeps_parent, settle=False)
            if parent is None:
                return
            node = parent

    def _release_parent(
        self, node: DirNode, c: Counters, *, removed: bool, settle: bool = True
    ) -> DirNode | None:
        """Tell the parent one child is finished. Returns the parent if that finished it."""
        parent = node.parent
        assert parent is not None
        with self._tree_lock:
            parent.children -= 1
            if not removed:
                parent.kept = True
            if parent.holds() or parent.children:
                self._maybe_park(parent)
                return None
        if parent.parent is None:
            return None  # the root: never removed; the walk ends when the queue drains
        if settle:
            self._finish(parent, c)
            return None
        return parent

    def _remove_if_empty(self, node: DirNode, c: Counters) -> str:
        """Remove a finished directory if it is empty and allowed. Returns the outcome."""
        if not self.remove_empty_dirs or node.kept or self._stop:
            return KEPT
        if self.keep_young_dirs and node.st is not None and not self.policy.is_expired(node.st):
            # Its own timestamp, read before this run touched it, is newer than the cutoff:
            # an application probably created it for use. Keep it.
            if self.listing_events:  # every process decides alike: count it once
                c.young_dirs_kept += 1
            if self._debug and self.listing_events:
                self._debug_kept(
                    node.parent, node.name, "young directory: " + self.policy.why_kept(node.st)
                )
            return KEPT
        if self.dry_run and self.shard.active and not self.shard.owns_dir(node.key):
            return GONE  # a sharded dry run counts each directory in its owner shard only
        if not self._reserve_dir_slot():
            if self._debug:
                self._debug_kept(node.parent, node.name, "empty-directory limit reached")
            return KEPT
        if self.dry_run:
            c.empty_dirs_to_delete += 1
            if self.manifest is not None:
                self.manifest.write(
                    [manifest.dir_line(manifest.WOULD_RMDIR, self.relpath_of(node))]
                )
            if self._debug:
                self.log.debug(
                    "Would remove empty directory",
                    extra={"extra_fields": {"path": self.path_of(node)}},
                )
            return REMOVED
        outcome = self._rmdir(node, c)
        if outcome == REMOVED:
            c.empty_dirs_to_delete += 1
            c.empty_dirs_deleted += 1
            if self.manifest is not None:
                self.manifest.write([manifest.dir_line(manifest.RMDIR, self.relpath_of(node))])
        else:
            with self._tree_lock:
                self._dirs_reserved -= 1  # the slot was not used: give it back
        return outcome

    def _reserve_dir_slot(self) -> bool:
        # Reserved before the rmdir, under the lock: concurrent removals never exceed the limit.
        with self._tree_lock:
            if self.max_empty_dirs and self._dirs_reserved >= self.max_empty_dirs:
                return False
            self._dirs_reserved += 1
            return True

    def _rmdir(self, node: DirNode, c: Counters) -> str:
        parent = node.parent
        assert parent is not None
        parent_fd = self._borrow_fd(parent, via=node, c=c)
        if parent_fd is None:
            return KEPT
        try:
            fsops.remove_dir(parent_fd, node.name, dry_run=False)
            parent.touched = True
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                c.entries_vanished += 1  # someone else removed it: the parent may be empty
                return GONE
            if exc.errno in _NOT_EMPTY:
                return BUSY
            self._entry_error(c, node, None, "rmdir", exc)
            return KEPT
        finally:
            with self._tree_lock:
                parent.borrowers -= 1
        if self._debug:
            self.log.debug(
                "Removed empty directory", extra={"extra_fields": {"path": self.path_of(node)}}
            )
        return REMOVED

    def _borrow_fd(self, parent: DirNode, *, via: DirNode, c: Counters) -> int | None:
        with self._tree_lock:
            if parent.fd is not None:
                parent.borrowers += 1
                return parent.fd
        if via.fd is None:
            return None  # cannot happen by construction; refusing is the safe answer
        assert parent.st is not None
        try:
            fd = fsops.open_parent(via.fd, parent.st)
        except fsops.DirectoryChanged as exc:
            c.dirs_skipped_changed += 1
            self.log.warning(
                "Parent directory moved during the walk, not removing",
                extra={"extra_fields": {"path": self.path_of(via), "reason": str(exc)}},
            )
            return None
        except OSError as exc:
            self._entry_error(c, parent, None, "reopen directory", exc)
            return None
        with self._tree_lock:
            if parent.fd is None:
                parent.fd = fd
                self._open_nodes.add(parent)
            else:
                fsops.close(fd)
            parent.borrowers += 1
            return parent.fd
