"""An operations-per-second limit for the event loop: a token bucket that batches draw from.

Pure logic: time comes from an injectable ``clock`` (seconds, monotonic), and the only
coroutine, :meth:`TokenBucket.acquire`, sleeps through an injectable ``sleep``. Nothing here
touches the filesystem, so it is tested with a fake clock and no real sleeps.

The bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; one token
is one filesystem operation. :meth:`TokenBucket.reserve` takes ``n`` tokens at once and may
drive the bucket below zero (a debt): the caller then waits until the debt is repaid, i.e.
until the last of its ``n`` tokens would have arrived. So a batch far larger than the burst
(a chunk of 512 unlinks under a burst of 50) is never refused or split, and concurrent callers
are served in the order they reserved: each one waits for its own place behind the debt of
those before it. Over any long interval, at most ``burst + rate * interval`` operations are
granted.

``rate == 0`` means no limit: :meth:`reserve` only counts and returns 0.0, without reading
the clock; callers on a hot path can test :attr:`TokenBucket.unlimited` and skip the call.

Tokens of a cancelled :meth:`acquire` are not given back: the limit errs on the safe side.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["RateGate", "RateStatistics", "TokenBucket", "default_burst"]

#: Seconds covered by the sliding window of :attr:`RateStatistics.current_rate`.
DEFAULT_WINDOW = 5.0
#: Resolution of that window: grants are summed in slots of window / _SLOTS seconds.
_SLOTS = 50


def default_burst(rate: float) -> float:
    """A small burst: a tenth of a second's worth of operations, at least one."""
    return max(1.0, rate / 10)


@dataclass(frozen=True)
class RateStatistics:
    """A snapshot of a :class:`TokenBucket`."""

    rate_limit: float
    """Operations per second allowed (0 = no limit)."""
    burst: float
    """Operations that may start at once after an idle period."""
    ops_granted: int
    """Operations reserved so far (those still waiting included)."""
    reservations: int
    """Calls of reserve/acquire that asked for at least one operation."""
    delayed_reservations: int
    """Reservations that had to wait."""
    wait_seconds_total: float
    """Sum of every reservation's delay (concurrent waits add up)."""
    throttled_seconds: float
    """Wall time during which at least one reservation was waiting for the limit: how long
    the run waited for it."""
    elapsed_seconds: float
    """Seconds since the bucket was created (0.0 when unlimited: the clock is not read)."""
    current_rate: float | None
    """Operations allowed to start per second over the last ``window`` seconds (over the
    time since creation while that is shorter); None when unlimited."""
    average_rate: float | None
    """ops_granted / elapsed_seconds; None when unlimited or before any time has passed."""


class TokenBucket:
    """A token bucket with debt, for ``rate`` operations per second and a ``burst`` allowance.

    :param rate: operations per second; 0 = no limit. Fractions are allowed (0.5 = one
        operation every two seconds). Negative, infinite or NaN values raise ValueError.
    :param burst: tokens the bucket holds when full (default: :func:`default_burst`); the
        bucket starts full. Must be at least 1.
    :param clock: monotonic time in seconds (default ``time.monotonic``).
    :param sleep: coroutine function that sleeps for a number of seconds
        (default ``asyncio.sleep``); used by :meth:`acquire` only.
    :param window: seconds of the sliding window of ``current_rate``.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        window: float = DEFAULT_WINDOW,
    ) -> None:
        rate = float(rate)
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"rate must be a finite number >= 0 (0 = no limit), not {rate!r}")
        if burst is None:
            burst = default_burst(rate)
        burst = float(burst)
        if not math.isfinite(burst) or burst < 1:
            raise ValueError(f"burst must be a finite number >= 1, not {burst!r}")
        window = float(window)
        if not math.isfinite(window) or window <= 0:
            raise ValueError(f"window must be a finite number > 0, not {window!r}")
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        self._window = window
        self._unlimited = rate == 0
        self._granted = 0
        self._reservations = 0
        self._delayed = 0
        self._wait_total = 0.0
        self._throttled = 0.0
        self._created = 0.0 if self._unlimited else clock()
        self._tokens = burst
        self._updated = self._created
        self._busy_until = self._created
        self._slot_width = window / _SLOTS
        # (slot number, operations allowed to start in that slot), slot numbers increasing:
        # start times never decrease, because each reservation queues behind the debt.
        self._slots: deque[list[float]] = deque()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    @property
    def unlimited(self) -> bool:
        return self._unlimited

    def reserve(self, n: int = 1) -> float:
        """Take n tokens now; return the seconds to wait before the n operations may start.

        Never refuses: a reservation beyond the tokens at hand leaves a debt that the
        following reservations queue behind.
        """
        if n < 0:
            raise ValueError(f"cannot reserve a negative number of operations ({n})")
        if self._unlimited:
            self._granted += n
            if n:
                self._reservations += 1
            return 0.0
        if n == 0:
            return 0.0
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._updated = now
        self._tokens -= n
        delay = -self._tokens / self._rate if self._tokens < 0 else 0.0
        self._granted += n
        self._reservations += 1
        start = now + delay
        if delay > 0:
            self._delayed += 1
            self._wait_total += delay
            if start > self._busy_until:
                self._throttled += start - max(now, self._busy_until)
                self._busy_until = start
        self._record(now, start, n)
        return delay

    def wait_time(self) -> float:
        """Seconds until the debt is repaid (the bucket is back to zero tokens); reserves
        nothing. A caller that waits for this before reserving sees every debt, including
        one charged after its own reservation was computed."""
        if self._unlimited:
            return 0.0
        now = self._clock()
        tokens = min(self._burst, self._tokens + max(0.0, now - self._updated) * self._rate)
        return -tokens / self._rate if tokens < 0 else 0.0

    async def acquire(self, n: int = 1) -> float:
        """Reserve n operations and sleep until they may start; return the delay slept."""
        delay = self.reserve(n)
        if delay > 0:
            await self._sleep(delay)
        return delay

    def statistics(self) -> RateStatistics:
        if self._unlimited:
            return RateStatistics(
                rate_limit=0.0,
                burst=self._burst,
                ops_granted=self._granted,
                reservations=self._reservations,
                delayed_reservations=0,
                wait_seconds_total=0.0,
                throttled_seconds=0.0,
                elapsed_seconds=0.0,
                current_rate=None,
                average_rate=None,
            )
        now = self._clock()
        elapsed = max(0.0, now - self._created)
        span = min(self._window, elapsed)
        current = None
        if span > 0:
            # Slots wholly or partly inside (now - span, now]; a slot still in the future
            # (operations that are waiting) does not count yet.
            first = (now - span) / self._slot_width
            last = now / self._slot_width
            ops = 0.0
            for slot, count in self._slots:
                if slot + 1 <= first or slot > last:
                    continue
                # The slot's share inside the window (grants are spread evenly over a slot).
                inside = min(slot + 1, last) - max(slot, first)
                ops += count * max(0.0, min(1.0, inside))
            current = ops / span
        # Waits that are still going on count up to now only.
        throttled = self._throttled - max(0.0, self._busy_until - max(now, self._created))
        return RateStatistics(
            rate_limit=self._rate,
            burst=self._burst,
            ops_granted=self._granted,
            reservations=self._reservations,
            delayed_reservations=self._delayed,
            wait_seconds_total=self._wait_total,
            throttled_seconds=max(0.0, throttled),
            elapsed_seconds=elapsed,
            current_rate=current,
            average_rate=self._granted / elapsed if elapsed > 0 else None,
        )

    def _record(self, now: float, start: float, n: int) -> None:
        slot = math.floor(start / self._slot_width)
        slots = self._slots
        if slots and slots[-1][0] == slot:
            slots[-1][1] += n
        else:
            slots.append([slot, n])
        # Forget slots that left the window.
        horizon = math.floor((now - self._window) / self._slot_width) - 1
        while slots[0][0] < horizon:
            slots.popleft()


class RateGate:
    """The engine's side of the limit: batches queue at one gate, in order.

    The batch at the head waits until the bucket's debt is repaid, then takes the tokens it
    knows it needs (its estimate); when it is done, what it did beyond that (its unlinks, its
    listing reads) is charged as a debt. So a debt charged by a batch that just finished
    delays the very next batch, not one that would be dispatched seconds later: the rate holds
    over any few seconds, not only on average. Without a limit (rate 0) it only counts.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bucket = TokenBucket(rate, clock=clock) if rate else None
        self._gate = asyncio.Lock()
        self._clock = clock
        self._started = clock()
        self.ops_done = 0  # operations made, counted when each batch is done
        self.waited = 0.0  # seconds the head of the queue waited for the limit

    async def throttle(self, ops: int, stopping: Callable[[], bool]) -> bool:
        """Wait for the limit, then take ``ops`` tokens. Returns False if the run is stopping
        (the batch must not start): a stop never waits for the limit."""
        if self.bucket is None:
            return True
        async with self._gate:
            began = self._clock()
            while (delay := self.bucket.wait_time()) > 0 and not stopping():
                await asyncio.sleep(min(delay, 0.1))
            self.waited += self._clock() - began
            if stopping():
                return False
            if ops > 0:
                self.bucket.reserve(ops)
        return True

    def charge(self, estimate: int, actual: int) -> None:
        """A batch is done: count what it did; what it did beyond its estimate is owed."""
        self.ops_done += actual
        if self.bucket is not None and actual > estimate:
            self.bucket.reserve(actual - estimate)

    def statistics(self) -> dict[str, float | int]:
        """The rate fields of the progress and final records (none without a limit)."""
        if self.bucket is None:
            return {}
        stats = self.bucket.statistics()
        elapsed = max(self._clock() - self._started, 1e-9)
        return {
            "ops_per_second_limit": stats.rate_limit,
            "ops_per_second": round(stats.current_rate or 0.0, 1),  # granted, recent window
            "ops_per_second_average": round(self.ops_done / elapsed, 1),  # made, whole run
            "ops_counted": self.ops_done,
            "rate_limit_wait_seconds": round(self.waited, 3),
        }
