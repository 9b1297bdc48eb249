"""Pure decisions about entries: no I/O here.

The cutoff is computed once, at start, from the wall clock: an entry is expired when its
chosen timestamp is strictly older than ``now - max_age_days``. Timestamps are compared in
integer nanoseconds, so no float rounding can move a file across the line.

Which timestamp (``--age-by``):

* ``mtime`` (default): last modification of the content;
* ``atime``: last access; unreliable on most mounts (``noatime``, ``relatime``: see README);
* ``ctime``: last change of content or metadata (rename, chmod, link count);
* ``newest``: the most recent of the three: a file is old only when all three are old.
"""

from __future__ import annotations

import datetime
import os
import stat
import time
from collections.abc import Callable

NS_PER_DAY = 86_400 * 1_000_000_000

_TIMESTAMP: dict[str, Callable[[os.stat_result], int]] = {
    "mtime": lambda st: st.st_mtime_ns,
    "atime": lambda st: st.st_atime_ns,
    "ctime": lambda st: st.st_ctime_ns,
    "newest": lambda st: max(st.st_mtime_ns, st.st_atime_ns, st.st_ctime_ns),
}


class AgePolicy:
    __slots__ = ("age_by", "cutoff_ns", "is_expired", "timestamp")

    def __init__(self, cutoff_ns: int, age_by: str = "mtime") -> None:
        self.cutoff_ns = cutoff_ns
        self.age_by = age_by
        self.timestamp = _TIMESTAMP[age_by]
        # Built once as a closure: it is called for every file.
        if age_by == "mtime":
            self.is_expired: Callable[[os.stat_result], bool] = lambda st: (
                st.st_mtime_ns < cutoff_ns
            )
        else:
            timestamp = self.timestamp
            self.is_expired = lambda st: timestamp(st) < cutoff_ns

    @classmethod
    def from_days(
        cls, max_age_days: float, now_ns: int | None = None, age_by: str = "mtime"
    ) -> AgePolicy:
        if now_ns is None:
            now_ns = time.time_ns()
        # round() keeps fractional days exact to the nanosecond; a huge age gives a cutoff
        # far before 1970, which simply matches nothing: Python ints do not underflow.
        return cls(now_ns - round(max_age_days * NS_PER_DAY), age_by)

    def why_kept(self, st: os.stat_result) -> str:
        """The reason shown at DEBUG level for an entry that is not deleted."""
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            return "not a regular file"
        # Readable times (UTC) and the nanoseconds the comparison used.
        stamp = self.timestamp(st)
        return (
            f"{self.age_by} {iso_utc(stamp)} ({stamp} ns) is not older than the cutoff "
            f"{iso_utc(self.cutoff_ns)} ({self.cutoff_ns} ns)"
        )


def iso_utc(ns: int) -> str:
    """A timestamp in nanoseconds as ISO 8601 in UTC, to the microsecond; out-of-range
    values (a far-future mtime, a cutoff before year 1) as the number itself."""
    try:
        seconds, rest = divmod(ns, 1_000_000_000)  # integers: no float rounding
        moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC) + datetime.timedelta(
            microseconds=rest // 1000
        )
    except (OverflowError, OSError, ValueError):
        return f"{ns} ns since 1970"
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
