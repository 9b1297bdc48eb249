"""The memory guard: a safety net that pauses discovery while RSS is over the limit.

Only listing (which creates work) is paused; deleting goes on, since it frees memory. The
engine's own structures are bounded by its settings, so the guard should almost never fire;
when it does, each pause is counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psutil

MIB = 1024 * 1024


def current_rss_mb() -> float:
    return psutil.Process().memory_info().rss / MIB


class MemoryGuard:
    def __init__(
        self,
        limit_mb: int,
        set_paused: Callable[[bool], None],
        logger: logging.Logger,
        interval: float = 0.5,
    ) -> None:
        self.limit_mb = limit_mb
        self._set_paused = set_paused
        self._log = logger
        self._interval = interval
        self._process = psutil.Process()
        self.paused = False
        self.events = 0

    def rss_mb(self) -> float:
        return self._process.memory_info().rss / MIB

    def check(self) -> None:
        """One sample: pause or resume discovery."""
        rss = self.rss_mb()
        if rss > self.limit_mb and not self.paused:
            self.paused = True
            self.events += 1
            self._set_paused(True)
            self._log.warning(
                "Memory over the limit: pausing discovery of new work",
                extra={"extra_fields": {"rss_mb": round(rss, 1), "limit_mb": self.limit_mb}},
            )
        elif rss <= self.limit_mb and self.paused:
            self.paused = False
            self._set_paused(False)
            self._log.info(
                "Memory back under the limit: resuming discovery",
                extra={"extra_fields": {"rss_mb": round(rss, 1), "limit_mb": self.limit_mb}},
            )

    async def run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(self._interval)
