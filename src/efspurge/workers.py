"""File batches in worker processes (``--processes N``): a second core for a CPU-bound purge.

On a local disk the work is CPU-bound: every ``lstat`` and ``unlink`` passes the GIL, so one
CPython process cannot use a second core. ``--processes N`` forks N-1 worker processes at the
start of the run; the walk itself stays in the parent, on its event loop, with all of its state
(the tree, the caps, the counts, the empty-directory remover). A worker only runs
:func:`efspurge.filepurge.purge_files` on batches the parent sends it, and returns the results as
data, exactly as a thread does. So every mode gives the same result by construction: the
decisions are made in one place, the caps are reserved in one place.

Each batch carries the directory's descriptor itself (``SCM_RIGHTS`` over a Unix socket pair):
the worker works in the very directory the parent opened and checked, never by path. Workers
are forked before any thread exists, inherit the rules (plain data and closures), share the
stop flag through an anonymous shared mapping, and ignore SIGINT/SIGTERM: a signal sent to the
whole process group (systemd, some container runtimes) is the parent's to handle, once.

On a network filesystem each worker runs its batches in a thread pool of its own (the
``--io-threads`` of every process): each process has its own GIL, so the threads waiting on
round trips are split into a few small crowds instead of one big one, which costs far less CPU
per call (PERFORMANCE.md, "GIL crowds"). Batches then carry a sequence number, and a worker
answers each as soon as it is done, in any order. The worker's side of all this is
:mod:`efspurge.workerside`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import pickle
import select
import signal
import socket
import time
from typing import Any

from efspurge.filepurge import FileResults, FileRules
from efspurge.workerside import BEAT, HEADER, MAX_FDS_PER_BATCH, PEAK, FileJob, become_worker

__all__ = ["FileJob", "Worker", "WorkerPool"]


class Worker:
    """One worker process, seen from the parent. Up to one batch more than it has threads is
    in flight: the next one waits on the socket while the worker runs the current ones, so the
    worker does not sit idle while the parent's loop gets round to sending it more.

    One reader task takes the replies off the socket and hands each to the future of the batch
    whose sequence number it carries: a batch whose task is cancelled (the walk aborting, a
    caller's timeout around the Python API) never leaves its reply for another batch to read.
    A send or a read that ends half-way leaves the stream unframed: the worker is then broken,
    and every batch still waiting on it, or offered to it later, fails instead of reading out
    of step."""

    __slots__ = (
        "_reader",
        "_replies",
        "_send_lock",
        "_sent",
        "broken",
        "in_flight",
        "pid",
        "sock",
    )

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.in_flight = 0
        self.broken: Exception | None = None
        self._send_lock: asyncio.Lock | None = None
        self._replies: dict[int, asyncio.Future[Any]] = {}  # sequence number -> its batch
        self._sent = 0  # batches sent: the next one's sequence number
        self._reader: asyncio.Task[None] | None = None

    async def run(self, fds: list[int], jobs: list[FileJob], slots: int | None):
        """Send one batch and wait for its results (the loop stays free meanwhile)."""
        loop = asyncio.get_running_loop()
        if self._send_lock is None:
            self._send_lock = asyncio.Lock()
            self.sock.setblocking(False)
        async with self._send_lock:
            if self.broken is not None:
                raise self.broken
            # Registered before it is sent: a worker with threads may answer it before this
            # task resumes after the send, and the reader must find whose reply it is.
            seq = self._sent
            self._sent += 1
            reply = loop.create_future()
            reply.add_done_callback(_retrieve)
            self._replies[seq] = reply
            if self._reader is None or self._reader.done():
                self._reader = loop.create_task(self._read_replies())
            try:
                # Never a blocking send: with batches queued the worker may be busy, and it
                # must be able to send its reply while the parent is still sending the next.
                await _send_async(loop, self.sock, (seq, jobs, slots), fds)
            except OSError as exc:  # a broken pipe: the worker is most likely gone
                died = self._death_or(None)
                self._break(died or RuntimeError(f"worker {self.pid}: a send failed ({exc!r})"))
                if died is not None:
                    raise died from exc
                raise
            except BaseException:  # a cancellation: the worker is fine, the stream is not
                self._break(RuntimeError(f"worker {self.pid}: a send was interrupted"))
                raise
        # Shielded: cancelling this task leaves the reply to the reader, in its place.
        result = await asyncio.shield(reply)
        if isinstance(result, BaseException):
            raise result
        results: list[FileResults] = result
        return results

    async def _read_replies(self) -> None:
        """Read replies while batches wait for one; then end (a later batch starts another)."""
        loop = asyncio.get_running_loop()
        try:
            while self._replies:
                (size,) = HEADER.unpack(await _read_exact(loop, self.sock, HEADER.size))
                seq, reply = pickle.loads(await _read_exact(loop, self.sock, size))
                waiting = self._replies.pop(seq, None)
                if waiting is None:
                    raise RuntimeError(f"worker {self.pid}: a reply to no batch ({seq})")
                if not waiting.done():
                    waiting.set_result(reply)
        except asyncio.CancelledError:
            self._break(RuntimeError(f"worker {self.pid}: reading its replies was cancelled"))
            raise
        except Exception as exc:  # the worker exited, or the stream is corrupt
            self._break(self._death_or(exc))

    @property
    def replies_due(self) -> int:
        """Batches sent whose replies have not been read yet."""
        return len(self._replies)

    def abandon(self) -> None:
        """The run is over: stop reading replies (before the socket is closed under them)."""
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())

    def _death_or(self, other):
        """The worker's death (a WorkerDied) if it has ended, else ``other``. Never raises: it
        runs where a failure would keep _break from waking the batches (a hang)."""
        try:
            return self._died() or other
        except Exception:
            return other

    def _died(self) -> WorkerDied | None:
        """If the worker process has ended (killed outright: the OOM killer, a SIGKILL), say
        so plainly: the run's internal error then names what happened, not a broken pipe. The
        process is only looked at (WNOWAIT): the pool reaps it when it closes. Its socket is
        closed a moment before it can be waited for: a few tries (only when its socket broke)."""
        for _ in range(40):
            try:
                ended = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return None
            if ended is not None:
                break
            time.sleep(0.005)
        else:
            return None
        if ended.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
            try:
                how = f"killed by {signal.Signals(ended.si_status).name}"
            except ValueError:  # a real-time signal, which the enum does not name (review)
                how = f"killed by signal {ended.si_status}"
        else:
            how = f"exited with status {ended.si_status}"
        return WorkerDied(
            f"worker process {self.pid} {how}: the files of its batches in flight may be "
            "deleted without being counted or written to the manifest"
        )

    def kill(self, grace: float) -> None:
        """It did not answer within ``grace`` seconds of the run's stop (stopped, frozen, or
        stuck in a system call): killed, and its batches fail, so that the run can end. What
        they did is unknown: their files may be deleted without being counted or recorded."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._break(
            WorkerDied(
                f"worker process {self.pid} did not answer within {grace:g} s of the stop and "
                "was killed: the files of its batches in flight may be deleted without being "
                "counted or written to the manifest"
            )
        )

    def _break(self, exc: Exception) -> None:
        self.broken = exc
        waiting_batches, self._replies = list(self._replies.values()), {}
        for waiting in waiting_batches:
            if not waiting.done():
                waiting.set_exception(exc)


class WorkerDied(RuntimeError):
    """A worker process ended in the middle of the run."""


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a reply's outcome as seen: a batch whose task was cancelled never reads it, and
    asyncio would log "exception was never retrieved" for a broken worker's."""
    if not future.cancelled():
        future.exception()


async def _send_async(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, payload: object, fds: list[int]
) -> None:
    """Send one framed message on a non-blocking socket, its descriptors with the first
    byte, waiting (on the loop) whenever the socket's buffer is full."""
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    message = memoryview(HEADER.pack(len(data)) + data)
    while True:
        try:
            sent = socket.send_fds(sock, [message], fds) if fds else sock.send(message)
            break
        except BlockingIOError:
            await _writable(loop, sock)
    if sent < len(message):
        await loop.sock_sendall(sock, message[sent:])


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()
    loop.add_writer(sock, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_writer(sock)


async def _read_exact(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = await loop.sock_recv(sock, min(size - got, 1 << 20))
        if not chunk:
            raise EOFError("a worker process exited")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class WorkerPool:
    """The forked workers, and which of them is idle. Each runs ``threads`` batches at once
    (1 on a local disk) and holds one more, queued on its socket.

    Every directory of a batch in flight is a descriptor in the worker's own table
    (``SCM_RIGHTS`` gives it a copy, one per batch even for chunks of the same directory), so
    a worker holds at most ``fd_cap`` of them at once: the walk's own descriptor budget, which
    fits any ``ulimit -n`` of 64 or more. With threads, a batch is one directory's chunk."""

    def __init__(
        self, count: int, rules: FileRules, threads: int = 1, fd_cap: int = MAX_FDS_PER_BATCH * 2
    ) -> None:
        self.threads = threads
        if threads > 1:
            self.depth = max(1, min(threads + 1, fd_cap))  # those it runs and the next
            self.dirs_per_batch = 1
        else:
            self.depth = 2  # the batch it runs and the next
            self.dirs_per_batch = max(1, min(MAX_FDS_PER_BATCH, fd_cap // 2))
        self.workers: list[Worker] = []
        self._stop = getattr(rules.stopped, "set", None)  # the run's shared stop flag
        self._pids: list[int] = []
        # Each worker leaves its own memory here when it exits (the parent reports the sum).
        self._peaks = mmap.mmap(-1, PEAK.size * max(1, count))
        # And counts its stop checks here: a sign of life while it finishes after a stop.
        self._beats = mmap.mmap(-1, BEAT.size * max(1, count))
        for index in range(count):
            parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            pid = os.fork()
            if pid == 0:  # the worker
                parent_end.close()
                for other in self.workers:
                    other.sock.close()
                become_worker(child_end, rules, self._peaks, self._beats, index, threads)
            child_end.close()
            self.workers.append(Worker(pid, parent_end))

    def idle(self) -> Worker | None:
        """The least loaded worker that can take one more batch, if any (a broken one is
        offered too: its batch fails at once, and the run stops as an internal error)."""
        free = [w for w in self.workers if w.in_flight < self.depth]
        return min(free, key=lambda w: w.in_flight) if free else None

    @property
    def capacity(self) -> int:
        """Batches the workers can hold at once."""
        return len(self.workers) * self.depth

    async def kill_when_stuck(self, log: logging.Logger) -> None:
        """Started at the run's stop: batches end at their next check of the stop flag. A
        worker that still owes replies and has made no check (its heartbeat) for
        STOP_GRACE_SECONDS is stopped, frozen or stuck in a system call: it is killed, so that
        the run ends with its record, not at the orchestrator's SIGKILL. One whose checks go
        on is only slow (a throttled server, unlinks queued on a directory's lock): it is
        waited for, as killing it would lose its last deletions' record (found by review)."""
        last = self._heartbeats()
        while True:
            await asyncio.sleep(STOP_GRACE_SECONDS)
            beats = self._heartbeats()
            owing = [i for i, w in enumerate(self.workers) if w.replies_due and w.broken is None]
            if not owing:
                return
            for worker in [self.workers[i] for i in owing if beats[i] == last[i]]:
                worker.kill(STOP_GRACE_SECONDS)
                fields = {"pid": worker.pid, "grace_seconds": STOP_GRACE_SECONDS}
                log.warning("Worker process did not stop: killed", extra={"extra_fields": fields})
            last = beats

    def _heartbeats(self) -> list[int]:
        return [BEAT.unpack_from(self._beats, BEAT.size * i)[0] for i in range(len(self.workers))]

    def memory_mb(self) -> float:
        """The workers' own memory (USS at their exit) added up, once they are closed."""
        total_kb = sum(
            PEAK.unpack_from(self._peaks, PEAK.size * i)[0] for i in range(len(self._pids))
        )
        return total_kb / 1024

    def close(self) -> None:
        """End the workers: closing their socket is their signal to exit. Idempotent."""
        if not self.workers:
            return
        self._pids = [worker.pid for worker in self.workers]
        abandoned = any(w.replies_due or w.broken for w in self.workers)
        if abandoned and self._stop is not None:
            # Batches abandoned mid-walk (the walk was cancelled): nobody will read what they
            # did, so they must not go on deleting. Each ends at its next check of the flag.
            self._stop()
        for worker in self.workers:
            worker.abandon()
            worker.sock.close()
        # One deadline for all of them, however many (one after the other, each stuck worker
        # cost 20 s: 70 s with 4 processes, past a 60 s termination grace; found by review).
        left = _reap_all(self._pids, REAP_SECONDS)
        for pid in left:
            # Stopped (SIGSTOP, a frozen cgroup) or stuck: it never reads the closed socket.
            # Killed, so that the run ends; one stuck in an uninterruptible call is left to
            # init after that.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap_all(left, REAP_SECONDS)
        self.workers = []


# How long after a stop a worker may take to answer before it is killed: a healthy batch
# answers within milliseconds, a round trip to a failing NFS server within a few seconds.
STOP_GRACE_SECONDS = 10.0
# How long a worker may take to exit once its socket is closed (it has no batch left then).
REAP_SECONDS = 10.0


def _reap_all(pids: list[int], timeout: float) -> list[int]:
    """Wait for these workers' exits, all within one ``timeout``; the ones still running."""
    deadline = time.monotonic() + timeout
    return [pid for pid in pids if not _reaped(pid, max(0.0, deadline - time.monotonic()))]


def _reaped(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for a worker's exit. True once it is reaped (or gone).
    A pidfd says the moment it exits (no polling delay at the end of every run)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = None  # already gone
    except OSError:  # a kernel before 5.3
        return _reaped_by_polling(pid, timeout)
    try:
        if pidfd is not None:
            select.select([pidfd], [], [], timeout)
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return bool(done)


def _reaped_by_polling(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if done:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
