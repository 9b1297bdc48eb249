#!/usr/bin/env python3
"""ab.py SCENARIO ROUNDS CMD... : fresh tree per run, interleaved; medians and paired ratios vs CMD 1."""
import sys, subprocess, time, statistics, resource
sc, rounds, cmds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
root = "/dev/shm/p/t"
walls = {c: [] for c in cmds}; cpus = {c: [] for c in cmds}
for r in range(rounds):
    order = cmds if r % 2 == 0 else cmds[::-1]
    for c in order:
        subprocess.run([sys.executable, "/tmp/gen.py", sc, root], check=True, capture_output=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(c.replace("{}", root), shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls[c].append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus[c].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
base = cmds[0]
for c in cmds:
    ratios = [a / b for a, b in zip(walls[c], walls[base])]
    print(f"{statistics.median(walls[c]):6.3f}s wall  cpu {statistics.median(cpus[c]):5.2f}  x{statistics.median(ratios):5.2f} (min {min(ratios):.2f} max {max(ratios):.2f})  {c[:110]}")
