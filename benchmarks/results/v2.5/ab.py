#!/usr/bin/env python3
"""ab.py SCENARIO ROUNDS CMD...: a fresh tree per run, commands interleaved (the order
alternating per round); prints medians and ratios to the first command, paired per round.
"{}" in a command is the tree. The tree is made by gen.py (benchmarks/bench.py's Scenario)."""

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

GEN = str(Path(__file__).with_name("gen.py"))
ROOT = "/dev/shm/p/t"


def main() -> None:
    scenario, rounds, cmds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    walls: dict[str, list[float]] = {c: [] for c in cmds}
    cpus: dict[str, list[float]] = {c: [] for c in cmds}
    for r in range(rounds):
        for cmd in cmds if r % 2 == 0 else cmds[::-1]:
            subprocess.run([sys.executable, GEN, scenario, ROOT], check=True, capture_output=True)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(
                cmd.replace("{}", ROOT),
                shell=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            walls[cmd].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            cpus[cmd].append(cpu)
    base = cmds[0]
    for cmd in cmds:
        ratios = [a / b for a, b in zip(walls[cmd], walls[base], strict=True)]
        print(
            f"{statistics.median(walls[cmd]):6.3f}s wall  cpu {statistics.median(cpus[cmd]):5.2f}"
            f"  x{statistics.median(ratios):5.2f} (min {min(ratios):.2f} max {max(ratios):.2f})"
            f"  {cmd[:110]}"
        )


if __name__ == "__main__":
    main()
