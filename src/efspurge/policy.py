"""Pure decisions about entries: no I/O here.

The cutoff is computed once, at start, from the wall clock: an entry is expired when its
modification time is strictly older than ``now - max_age_days``. Timestamps are compared in
integer nanoseconds, so no float rounding can move a file across the line.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class AgePolicy:
    cutoff_ns: int

    @classmethod
    def from_days(cls, max_age_days: float, now_ns: int | None = None) -> AgePolicy:
        if now_ns is None:
            now_ns = time.time_ns()
        # round() keeps fractional days exact to the nanosecond; a huge age gives a cutoff
        # far before 1970, which simply matches nothing: Python ints do not underflow.
        return cls(cutoff_ns=now_ns - round(max_age_days * NS_PER_DAY))

    def is_expired(self, st: os.stat_result) -> bool:
        """True when a regular file's own lstat says it is older than the cutoff."""
        return st.st_mtime_ns < self.cutoff_ns

    def why_kept(self, st: os.stat_result) -> str:
        """The reason shown at DEBUG level for a file that is not deleted."""
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        return f"modified {st.st_mtime_ns} ns is not older than the cutoff {self.cutoff_ns} ns"
