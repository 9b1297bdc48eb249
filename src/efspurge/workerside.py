"""A worker process's life (``--processes N``): receive batches, purge, answer.

The parent's side, and why there are workers at all, is :mod:`efspurge.workers`. A worker is
forked by :class:`efspurge.workers.WorkerPool` and then lives here only: it receives a batch
(the names of a directory's files, with the directory's descriptor over ``SCM_RIGHTS``), runs
:func:`efspurge.filepurge.purge_files` on it, in a thread pool of its own when it has more
than one thread, and sends back what became of the files, as data, with the batch's sequence
number. The message framing (a 4-byte length, then a pickle) is shared with the parent.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import signal
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import psutil

from efspurge import filepurge
from efspurge.filepurge import FileRules

HEADER = struct.Struct("!I")
PEAK = struct.Struct("Q")  # KiB
BEAT = struct.Struct("Q")  # a worker's stop checks so far (its heartbeat), kept below 2**32
MAX_FDS_PER_BATCH = 64  # directories in one message (SCM_RIGHTS allows up to 253)


@dataclass(slots=True)
class FileJob:
    """One directory's part of a batch: its files, and the relative path for the manifest."""

    names: list[str]
    rel_dir: str | None


def _send(sock: socket.socket, payload: object, fds: list[int] = ()) -> None:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    message = HEADER.pack(len(data)) + data
    sent = socket.send_fds(sock, [message], list(fds)) if fds else sock.send(message)
    if sent < len(message):
        sock.sendall(message[sent:])


def _recv_exact(sock: socket.socket, size: int, first: bytes = b"") -> bytes:
    """At least ``size`` bytes: ``first`` and what follows it on the socket."""
    chunks, got = [first], len(first)
    while got < size:
        chunk = sock.recv(min(size - got, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _serve(sock: socket.socket, rules: FileRules, threads: int) -> None:
    """A worker's whole life: receive batches with their descriptors, purge, answer each.

    With one thread, each batch runs as it arrives. With more, each runs in the worker's
    thread pool and is answered from there (one send at a time), while this thread goes on
    receiving; the pool is drained before the worker exits."""
    pool = ThreadPoolExecutor(threads, "efspurge-worker") if threads > 1 else None
    send_lock = threading.Lock()
    try:
        while (batch := _receive(sock)) is not None:
            if pool is None:
                _answer(sock, send_lock, rules, *batch)
            else:
                pool.submit(_answer, sock, send_lock, rules, *batch)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def _receive(sock: socket.socket) -> tuple[list[int], int, list[FileJob], int | None] | None:
    """The next batch: (descriptors, sequence number, jobs, slots); None once the parent
    closed its end (the run is over)."""
    try:
        # The header alone: the parent may already have queued the next batch behind this
        # one, and its bytes (and descriptors) must stay on the socket for the next read.
        data, fds, _, _ = socket.recv_fds(sock, HEADER.size, MAX_FDS_PER_BATCH)
    except OSError:
        return None
    if not data:
        return None
    (size,) = HEADER.unpack(_recv_exact(sock, HEADER.size, data))
    seq, jobs, slots = pickle.loads(_recv_exact(sock, size))
    return fds, seq, jobs, slots


def _answer(
    sock: socket.socket,
    send_lock: threading.Lock,
    rules: FileRules,
    fds: list[int],
    seq: int,
    jobs: list[FileJob],
    slots: int | None,
) -> None:
    """Run one batch and send its results (or the error, for the parent to report)."""
    try:
        reply: object = _run_jobs(fds, jobs, slots, rules)
    except BaseException as exc:  # reported to the parent as an internal error
        reply = RuntimeError(f"worker {os.getpid()}: {exc!r}")
    finally:
        for fd in fds:
            os.close(fd)
    with send_lock:
        try:
            _send(sock, (seq, reply))
        except BaseException:
            # A reply that cannot be sent (or only in part) must not leave its batch waiting
            # for ever: the parent sees the end of the stream, and the run stops as an error.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            raise


def _run_jobs(fds: list[int], jobs: list[FileJob], slots: int | None, rules: FileRules):
    if len(fds) != len(jobs):
        raise RuntimeError(
            f"{len(fds)} directory descriptors arrived for {len(jobs)} directories: the "
            "descriptor limit (ulimit -n) dropped some in transit"
        )
    triples = [(fd, job.names, job.rel_dir) for fd, job in zip(fds, jobs, strict=True)]
    return filepurge.purge_dirs(triples, rules, slots)


def _stop_with_parent(rules: FileRules, beats: mmap.mmap, index: int) -> FileRules:
    """The rules with a stop check that also ends when the parent is gone (SIGKILL, the OOM
    killer, a second signal): its batches then stop at their next check, instead of deleting
    what nobody will record, past the run's time budget. Each check is also a heartbeat in
    ``beats``: the parent kills a worker after a stop only if its heartbeats stopped, not
    one that is slow (WorkerPool.kill_when_stuck)."""
    parent, stopped = os.getppid(), rules.stopped
    counter = memoryview(beats).cast("Q")
    # The parent is asked for at every check on a local disk (every 64 files), every 16th
    # where batches check before every file (a system call per file would cost more).
    every = 15 if rules.stop_check_mask == 0 else 0

    def stopped_or_orphaned() -> bool:
        beat = counter[index] = (counter[index] + 1) & 0xFFFF_FFFF  # a sign of life
        return stopped() or (beat & every == 0 and os.getppid() != parent)

    return replace(rules, stopped=stopped_or_orphaned)


def become_worker(
    sock: socket.socket,
    rules: FileRules,
    peaks: mmap.mmap,
    beats: mmap.mmap,
    index: int,
    threads: int,
) -> None:
    code = 0
    try:
        # The parent's loop routes signals through a wake-up descriptor that this process
        # inherited: detach from it, and leave SIGINT/SIGTERM/SIGHUP to the parent.
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        _serve(sock, _stop_with_parent(rules, beats, index), threads)
    except BaseException:
        code = 3
    finally:
        with contextlib.suppress(Exception):
            # Its own memory (USS): the pages it shares with the parent since the fork are
            # the parent's, and a cgroup counts them once.
            uss_kb = psutil.Process().memory_full_info().uss // 1024
            PEAK.pack_into(peaks, PEAK.size * index, uss_kb)
        os._exit(code)  # no atexit handlers, no flushing of the parent's buffers
