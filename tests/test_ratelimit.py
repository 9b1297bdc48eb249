"""The token bucket as a pure unit: a fake clock, no real sleeps, no timing assertions."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from efspurge.ratelimit import TokenBucket, default_burst


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Sleeping moves the fake time forward, as a real sleep would."""
        self.slept.append(seconds)
        self.now += seconds


def bucket(rate: float, burst: float | None = None, **kw) -> tuple[TokenBucket, FakeClock]:
    clock = FakeClock()
    return TokenBucket(rate, burst, clock=clock, sleep=clock.sleep, **kw), clock


def run_sequential(tb: TokenBucket, clock: FakeClock, batches: list[int]) -> list[float]:
    """Callers that do one batch after the other, each starting when allowed to."""
    starts = []
    for n in batches:
        clock.advance(tb.reserve(n))
        starts.append(clock.now)
    return starts


def test_a_full_bucket_lets_the_burst_through_at_once():
    tb, _ = bucket(100, burst=10)
    assert [tb.reserve() for _ in range(10)] == [0.0] * 10
    # The eleventh operation waits for one token: 1/100 s.
    assert tb.reserve() == pytest.approx(0.01)


def test_steady_state_rate_is_the_limit():
    tb, clock = bucket(500, burst=5)
    starts = run_sequential(tb, clock, [1] * 5005)
    # After the burst, one operation every 2 ms: 5,000 more operations take 10 s.
    assert starts[-1] - starts[0] == pytest.approx(10.0)
    # Any 1-second interval after the burst holds 500 starts (+-1 for the edges).
    late = [t for t in starts if t >= starts[0] + 0.5]
    for k in range(8):
        lo = late[0] + k
        inside = sum(1 for t in late if lo <= t < lo + 1)
        assert abs(inside - 500) <= 1


def test_idle_time_refills_only_up_to_the_burst():
    tb, clock = bucket(10, burst=3)
    assert tb.reserve(3) == 0.0
    clock.advance(60)  # a minute idle: still only 3 tokens
    assert tb.reserve(3) == 0.0
    assert tb.reserve(1) == pytest.approx(0.1)


def test_a_batch_much_larger_than_the_burst_waits_for_its_last_token():
    tb, clock = bucket(100, burst=10)
    delay = tb.reserve(510)
    assert delay == pytest.approx(5.0)  # 500 tokens of debt at 100/s
    # The next caller queues behind the debt: its place is after those 510 operations.
    assert tb.reserve(100) == pytest.approx(6.0)
    clock.advance(6.0)
    assert tb.reserve(1) == pytest.approx(0.01)


def test_large_batches_keep_the_long_run_rate():
    tb, clock = bucket(2000, burst=200)
    starts = run_sequential(tb, clock, [512] * 200)
    total = 512 * 200
    # The last batch starts when its last token arrives: operations = burst + rate * elapsed.
    assert total == pytest.approx(200 + 2000 * (starts[-1] - 1000.0), rel=1e-9)
    # A batch never waits for more than its own size at the rate (no starvation by size).
    assert all(0 < b - a <= 512 / 2000 + 1e-9 for a, b in itertools.pairwise(starts))


def test_concurrent_callers_are_served_in_reservation_order():
    tb, _ = bucket(10, burst=1)
    delays = [tb.reserve(1) for _ in range(5)]
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert delays == sorted(delays)


@pytest.mark.parametrize("rate", [0.5, 0.25, 2.5, 1 / 3])
def test_fractional_rates(rate):
    tb, clock = bucket(rate)
    assert tb.burst == 1.0
    starts = run_sequential(tb, clock, [1] * 11)
    assert starts[-1] - starts[0] == pytest.approx(10 / rate)


def test_unlimited_never_waits_and_never_reads_the_clock():
    def clock():
        raise AssertionError("the unlimited path must not read the clock")

    tb = TokenBucket(0, clock=clock)
    assert tb.unlimited
    assert tb.reserve(10**9) == 0.0
    assert tb.reserve(0) == 0.0
    assert asyncio.run(tb.acquire(5)) == 0.0
    stats = tb.statistics()
    assert stats.ops_granted == 10**9 + 5
    assert stats.reservations == 2
    assert stats.rate_limit == 0.0
    assert stats.current_rate is None and stats.average_rate is None
    assert stats.throttled_seconds == 0.0


def test_acquire_sleeps_the_reserved_delay_through_the_injected_sleep():
    tb, clock = bucket(100, burst=10)

    async def main():
        return [await tb.acquire(10), await tb.acquire(50), await tb.acquire(1)]

    assert asyncio.run(main()) == pytest.approx([0.0, 0.5, 0.01])
    assert clock.slept == pytest.approx([0.5, 0.01])


def test_acquire_with_many_tasks_spreads_them_over_time():
    tb, clock = bucket(1000, burst=100)

    async def worker(results):
        for _ in range(10):
            await tb.acquire(50)
            results.append(clock.now)

    async def main():
        results: list[float] = []
        await asyncio.gather(*(worker(results) for _ in range(20)))
        return results

    starts = asyncio.run(main())
    # 20 workers x 10 batches x 50 = 10,000 operations; the first 100 are the burst.
    assert len(starts) == 200
    assert max(starts) - 1000.0 == pytest.approx((10_000 - 100) / 1000)


def test_statistics_rates_and_waits():
    tb, clock = bucket(100, burst=10, window=5)
    stats = tb.statistics()
    assert stats.ops_granted == 0 and stats.current_rate is None  # no time has passed
    starts = run_sequential(tb, clock, [10] * 101)  # 1,010 operations: 10 s at 100/s
    assert starts[-1] - starts[0] == pytest.approx(10.0)
    stats = tb.statistics()
    assert stats.ops_granted == 1010
    assert stats.reservations == 101
    assert stats.delayed_reservations == 100
    assert stats.wait_seconds_total == pytest.approx(10.0)
    assert stats.throttled_seconds == pytest.approx(10.0)
    assert stats.elapsed_seconds == pytest.approx(10.0)
    assert stats.average_rate == pytest.approx(101.0)
    assert stats.current_rate == pytest.approx(100, rel=0.05)
    # Idle for 2.5 s: half of the window is empty.
    clock.advance(2.5)
    assert tb.statistics().current_rate == pytest.approx(50, rel=0.1)
    clock.advance(10)
    assert tb.statistics().current_rate == 0.0


def test_statistics_count_concurrent_waits_once_in_throttled_time():
    tb, clock = bucket(10, burst=1)
    for _ in range(11):
        tb.reserve(1)  # eleven callers at the same instant: the last waits 1 s
    stats = tb.statistics()
    assert stats.wait_seconds_total == pytest.approx(sum(k / 10 for k in range(11)))
    assert stats.throttled_seconds == 0.0  # no time has passed yet
    clock.advance(0.4)
    assert tb.statistics().throttled_seconds == pytest.approx(0.4)
    clock.advance(5)
    assert tb.statistics().throttled_seconds == pytest.approx(1.0)
    # Operations still waiting do not count in the current rate before they may start.
    tb2, _ = bucket(10, burst=1)
    tb2.reserve(100)
    assert tb2.statistics().ops_granted == 100


def test_a_clock_that_goes_backwards_grants_nothing_extra():
    tb, clock = bucket(10, burst=1)
    tb.reserve(1)
    clock.advance(-5)
    assert tb.reserve(1) == pytest.approx(0.1)


@pytest.mark.parametrize("rate", [-1, math.nan, math.inf, -math.inf])
def test_bad_rates_are_rejected(rate):
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate)


@pytest.mark.parametrize("burst", [0, 0.5, -1, math.nan, math.inf])
def test_bad_bursts_are_rejected(burst):
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(10, burst)


def test_negative_reservations_are_rejected():
    tb, _ = bucket(10)
    with pytest.raises(ValueError):
        tb.reserve(-1)


def test_default_burst():
    assert default_burst(5000) == 500
    assert default_burst(2) == 1.0
    assert TokenBucket(500).burst == 50


def test_wait_time_sees_a_debt_without_reserving():
    clock = FakeClock()
    bucket = TokenBucket(100, burst=10, clock=clock)
    assert bucket.wait_time() == 0.0
    bucket.reserve(30)  # 10 at hand, a debt of 20: repaid in 0.2 s
    assert bucket.wait_time() == pytest.approx(0.2)
    clock.advance(0.15)
    assert bucket.wait_time() == pytest.approx(0.05)
    assert bucket.statistics().ops_granted == 30  # peeking took nothing
    clock.advance(0.05 + 1e-9)
    assert bucket.wait_time() == 0.0
    assert TokenBucket(0).wait_time() == 0.0
