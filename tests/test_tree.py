"""The walk's bookkeeping (efspurge.tree): plain data, tested without I/O."""

from __future__ import annotations

from efspurge.tree import Counter


def test_a_counter_without_a_cap_is_never_full():
    # free() is None without a cap: a test of "not free()" would read that as "cap reached".
    counter = Counter(0)
    assert counter.free() is None and not counter.full
    assert counter.reserve(10**9) is None and not counter.full
    counter.settle(None, 10**9)
    assert not counter.full and not counter.exhausted


def test_a_counter_is_full_when_every_slot_is_used_or_reserved():
    counter = Counter(3)
    assert not counter.full
    assert counter.reserve(2) == 2 and not counter.full
    assert counter.reserve(5) == 1 and counter.full and not counter.exhausted
    counter.settle(2, 1)  # a batch used one of its two slots: one comes back
    assert counter.free() == 1 and not counter.full
    assert counter.reserve(1) == 1 and counter.full
    counter.settle(1, 1)
    counter.settle(1, 1)
    assert counter.free() == 0 and counter.full and counter.exhausted
