"""The per-file loop against the CPython floor, in one process, without start-up or threads.

    python perfile_loop.py /dev/shm/perfile    # efspurge importable (its venv's python)

Makes 100,000 empty files in DIR (half of them 30+ days old) once, then times, 7 rounds,
median: the floor (``os.lstat(name, dir_fd=fd)`` and an mtime compare per file) against
``efspurge.filepurge.purge_files`` in dry-run mode over the same names in batches of 1,000
(the same lstat per file, the age decision and the age buckets; no unlink: a dry run).
The difference is efspurge's own Python per file.
"""

import os
import statistics
import sys
import time

from efspurge.filepurge import FileRules, purge_files
from efspurge.policy import AgePolicy
from efspurge.stats import age_edges

folder = sys.argv[1]
if not os.path.isdir(folder):
    os.makedirs(folder)
    for i in range(100_000):
        path = f"{folder}/f{i:06d}"
        open(path, "w").close()
        if i % 2 == 0:
            os.utime(path, (1_000_000_000, 1_000_000_000))
fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
names = sorted(os.listdir(folder))
now = time.time_ns()
policy = AgePolicy.from_days(30, now_ns=now)
rules = FileRules(policy.is_expired, policy.timestamp, age_edges(now), dry_run=True)


def floor() -> int:
    lstat, cutoff, n = os.lstat, policy.cutoff_ns, 0
    for name in names:
        if lstat(name, dir_fd=fd).st_mtime_ns < cutoff:
            n += 1
    return n


def efspurge() -> int:
    return sum(
        purge_files(fd, names[i : i + 1000], rules, None, None).selected
        for i in range(0, len(names), 1000)
    )


times: dict[str, list[float]] = {"floor": [], "efspurge": []}
for _ in range(7):
    for name, fn in (("floor", floor), ("efspurge", efspurge)):
        start = time.perf_counter()
        assert fn() == 50_000
        times[name].append(time.perf_counter() - start)
for name, values in times.items():
    print(f"{name:9} {statistics.median(values) * 1000:6.1f} ms per 100,000 files")
