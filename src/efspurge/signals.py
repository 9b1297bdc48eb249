"""SIGINT, SIGTERM and SIGHUP that arrive before the engine's own handlers are installed.

The command line calls ``install_early()`` first thing, before the heavy imports: from then on
a stopping signal (see ``stops_the_run``) is recorded instead of killing the process, and the
engine, once its own handlers are installed, reads ``early_signal()`` and treats a recorded
signal as a stop request (an interrupted run with its final record and exit code
130/143/129).

A second signal before the engine has taken over means the user insists: the process then
dies of that signal at once, as it would have without these handlers. Nothing has been
deleted at that point (the engine has not started).

Then :class:`LoopHandlers` is the engine's own: the stopping signals handled on the run's
event loop, and whatever handled them before (a Python caller's) put back at the end.

Standard library only: this module is imported while the process is still starting.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How long the loop has to take a second signal before a thread exits in its place.
SECOND_SIGNAL_GRACE = 2.0

_received: int | None = None


def _record(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is None:
        _received = signum
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def stops_the_run(signum: int) -> bool:
    """Whether the run takes this signal as a stop. SIGTERM always (a deadline); SIGINT unless
    it was ignored when the run started (a background job of a shell script, which a Ctrl-C
    meant for the script must not stop); SIGHUP (a closed terminal, a dropped ssh session)
    unless it is ignored (``nohup``: the run is to outlive the terminal) or handled by a
    program that embeds the engine."""
    current = signal.getsignal(signum)
    if signum == signal.SIGHUP:
        return current in (signal.SIG_DFL, _record)
    if signum == signal.SIGINT:
        return current is not signal.SIG_IGN
    return True


def install_early() -> None:
    """Record the stopping signals from now on (until the engine installs its own)."""
    for signum in SIGNALS:
        if not stops_the_run(signum):
            continue
        try:
            signal.signal(signum, _record)
        except ValueError:  # not the main thread (an embedding program): leave them alone
            return


def early_signal() -> int | None:
    """The first stopping signal received since ``install_early()``, or None."""
    return _received


def reset() -> None:
    """Forget a recorded signal (for a program that runs the engine more than once)."""
    global _received
    _received = None


class LoopHandlers:
    """The run's handlers of the stopping signals, on its event loop (main thread only).

    What handled each signal before, the loop's handler or the process's, is put back by
    ``remove()``: asyncio's ``remove_signal_handler`` alone leaves the default action, and a
    Python caller's process would then die of its next SIGTERM (found by review). On a loop
    whose handlers cannot be read (uvloop keeps them in C), nothing is put back: the old
    behaviour, rather than a process-level handler that belongs to that loop."""

    def __init__(self, loop: Any, on_signal: Callable[[int], None]) -> None:
        self.loop = loop
        self.signums = [s for s in SIGNALS if stops_the_run(s)]
        # asyncio has no public way to read a loop's handlers: its table, where there is one.
        table = getattr(loop, "_signal_handlers", None)
        self.saved = [
            (table.get(s), signal.getsignal(s)) if table is not None else (None, None)
            for s in self.signums
        ]
        # A signal recorded before the run (efspurge.signals) is the run's first.
        self.deliveries = 1 if early_signal() is not None else 0
        self._removed = False
        # The thread that ends the process if the loop cannot take a second signal: started
        # now, not from the handler (starting a thread takes a lock the interrupted code may
        # hold), and woken through a pipe (a write is safe in a handler).
        self._wake_r, self._wake_w = os.pipe()
        self._done = threading.Event()
        self._watchdog = threading.Thread(
            target=self._exit_if_stuck, name="efspurge-second-signal", daemon=True
        )
        held = signal.pthread_sigmask(signal.SIG_BLOCK, self.signums)
        try:
            self._watchdog.start()  # with the signals blocked: they are never delivered to it
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        for signum in self.signums:
            loop.add_signal_handler(signum, on_signal, signum)
            # asyncio's own Python-level handler does nothing (the wakeup descriptor carries
            # the signal to the loop); this one also counts, for a loop that cannot run.
            signal.signal(signum, self._delivered)

    def _delivered(self, signum: int, frame: FrameType | None) -> None:
        """Runs in the main thread even while the loop is blocked in a write (a log reader
        or a --manifest pipe that stopped reading: Python runs handlers when the write is
        interrupted, then writes again). The loop takes a second signal as "exit at once";
        if it cannot run, the watchdog thread does it SECOND_SIGNAL_GRACE seconds later
        (found by review: two SIGTERMs did nothing, only SIGKILL ended such a run)."""
        self.deliveries += 1
        if self.deliveries == 2 and not self._removed:
            os.write(self._wake_w, bytes([signum]))

    def _exit_if_stuck(self) -> None:
        woken = os.read(self._wake_r, 1)
        if woken == b"\0" or self._done.wait(SECOND_SIGNAL_GRACE):
            return  # the run is over (remove()): its handlers are no longer ours to act on
        signum = woken[0]
        os.write(2, f"efspurge: second {signal.Signals(signum).name}: exiting at once\n".encode())
        os._exit(128 + signum)

    def remove(self) -> None:
        self._removed = True
        # Held back while the handlers change hands, then delivered to the restored ones:
        # in between, a SIGTERM would meet the default action and kill the process.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, self.signums)
        try:
            for signum, (handle, handler) in zip(self.signums, self.saved, strict=True):
                self.loop.remove_signal_handler(signum)
                if handle is not None:
                    self.loop.add_signal_handler(signum, handle._callback, *handle._args)
                elif handler is not None:
                    signal.signal(signum, handler)
        finally:
            os.write(self._wake_w, b"\0")
            self._done.set()
            self._watchdog.join(5)
            os.close(self._wake_r)
            os.close(self._wake_w)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
