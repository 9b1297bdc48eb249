#!/usr/bin/env python3
"""Does `efspurge --max-ops-per-second N` hold its limit? Measured by slowfs's own counters.

    python benchmarks/ratelimit.py --out benchmarks/results/ratelimit --work /dev/shm/efspurge-rl

For each limit N (default 500, 2000 and 5000): generate a balanced tree (half of the files
old) on a tmpfs backing store, large enough to last the whole measurement at N; mount it
through slowfs with EFS-like latency (the options below, remounted per run: cold caches);
reset slowfs's counters and run `efspurge MOUNT/tree --max-age-days 30 --max-ops-per-second N
--max-runtime T`, sampling `stats.sh` every 0.5 s. T = 1 s + 3 windows of 5 s + 1 s, so the
run ends by its time budget (exit 5, with the final record) in the middle of the tree. Then:
for every 5-second window after the first second, the requests per second that reached slowfs
and whether that is within +-10 % of N; the whole tree is checked afterwards (no young file,
directory or symlink gone; only old files deleted).

Which slowfs requests count (--count): every request that is a round trip for the tool's
operations, i.e. all except RELEASE, RELEASEDIR and FORGET (the kernel sends those on its own,
asynchronously; NFS has no such round trip; slowfs's own max_ops ignores them too). The tool's
operations map to requests as follows:

  tool operation                   slowfs requests
  open a directory (openat)        LOOKUP (if not cached) + OPENDIR (+ RELEASEDIR, not counted)
  list it (scandir/getdents)       READDIRPLUS per ~190 entries (READDIR without readdirplus)
  lstat an entry                   GETATTR or LOOKUP, or nothing when the kernel's attribute
                                   cache still holds it from READDIRPLUS (attr_timeout=3 s)
  unlink / rmdir                   UNLINK / RMDIR (always one each)
  statvfs (filesystem type)        STATFS

So the rate slowfs sees can be below the tool's own count (lstat answered from the kernel
cache) and a little above it (a LOOKUP the kernel adds for an expired dentry). The report
gives the per-request breakdown of every window so either reading can be checked.

If efspurge does not accept --max-ops-per-second, the script stops with exit code 3 and says
so. --tiny (or EFSPURGE_BENCH_TINY=1): small trees, 1-second windows, a smoke test: the runs
must work and verify, the windows are reported but not judged. --slowfs-extra max_ops=2000
checks the measurement itself: slowfs then caps the same requests at 2,000/s (measured with an
efspurge that ignores the flag: 1,994 and 2,000 requests/s in the two windows).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench

EFS_LIKE = (
    "lat_getattr=1000 lat_readdir=1000 lat_unlink=2500 lat_rmdir=2500 lat_other=500 "
    "lat_opendir=0 entry_timeout=3 attr_timeout=3"
)
NOT_COUNTED = frozenset({"release", "releasedir", "forget"})
FLAG = "--max-ops-per-second"
EXIT_NO_FLAG = 3


# --- samples and windows (pure; tested on recorded data in tests/test_bench.py) ------------


def parse_stats(text: str) -> dict[str, int]:
    """Per-request counts from `stats.sh` output: the rows of its "op count errors ..." table."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[1].isdigit() and fields[0] != "op":
            counts[fields[0]] = int(fields[1])
    return counts


@dataclass
class Sample:
    t: float  # seconds since the tool started
    counts: dict[str, int]


def counted(counts: dict[str, int], ops: frozenset[str] | None) -> int:
    """Requests that count: those in ops, or (ops None) all but NOT_COUNTED."""
    if ops is None:
        return sum(n for op, n in counts.items() if op not in NOT_COUNTED)
    return sum(n for op, n in counts.items() if op in ops)


def value_at(samples: list[Sample], t: float, op: str | None = None, ops=None) -> float:
    """A cumulative count at time t, interpolated linearly between the samples around t
    (op: one request type; else the counted total)."""

    def get(s: Sample) -> int:
        return s.counts.get(op, 0) if op else counted(s.counts, ops)

    if t <= samples[0].t:
        return float(get(samples[0]))
    for a, b in itertools.pairwise(samples):
        if a.t <= t <= b.t:
            if b.t == a.t:
                return float(get(b))
            return get(a) + (get(b) - get(a)) * (t - a.t) / (b.t - a.t)
    return float(get(samples[-1]))


def windows(
    samples: list[Sample],
    limit: float,
    end: float,
    *,
    window: float = 5.0,
    skip: float = 1.0,
    tolerance: float = 0.10,
    ops: frozenset[str] | None = None,
) -> list[dict]:
    """Every whole window [skip + k*window, skip + (k+1)*window] that ends by `end` (and by
    the last sample): counted requests per second, its deviation from the limit, and whether
    it is within +-tolerance; plus each request type's rate."""
    if not samples:
        return []
    end = min(end, samples[-1].t)
    kinds = sorted({op for s in samples for op in s.counts})
    out = []
    k = 0
    while skip + (k + 1) * window <= end + 1e-9:
        lo, hi = skip + k * window, skip + (k + 1) * window
        total = value_at(samples, hi, ops=ops) - value_at(samples, lo, ops=ops)
        rate = total / window
        deviation = rate / limit - 1 if limit else None
        by_op = {
            op: round((value_at(samples, hi, op) - value_at(samples, lo, op)) / window, 1)
            for op in kinds
        }
        out.append(
            {
                "start_s": round(lo, 3),
                "end_s": round(hi, 3),
                "ops": round(total, 1),
                "ops_per_s": round(rate, 1),
                "deviation": None if deviation is None else round(deviation, 4),
                "within": deviation is not None and abs(deviation) <= tolerance + 1e-12,
                "by_op_per_s": {op: r for op, r in by_op.items() if r},
            }
        )
        k += 1
    return out


# --- one measured run --------------------------------------------------------------------


@dataclass
class RateRun:
    limit: int
    files: int
    exit_code: int
    wall_seconds: float
    deleted: int
    verified: bool
    problem: str = ""
    samples: list[dict] = field(default_factory=list)
    windows: list[dict] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    final_record: dict = field(default_factory=dict)


def accepts_flag(efspurge: str) -> bool:
    try:
        done = subprocess.run([efspurge, "--help"], capture_output=True, text=True)
    except OSError:
        return False
    return FLAG in done.stdout


def tree_for(limit: float, seconds: float, requests_per_file: float) -> bench.Scenario:
    """A balanced tree (leaves of 200 files, half old) that outlasts `seconds` at `limit`."""
    files = max(400, math.ceil(limit * seconds / requests_per_file * 1.2))
    fanout = max(2, math.ceil(math.sqrt(files / 200)))
    return bench.Scenario.parse(f"balanced:{fanout}x2x200")


class Sampler(threading.Thread):
    def __init__(self, stats_sh: Path, mountpoint: Path, interval: float, t0: float) -> None:
        super().__init__(daemon=True)
        self.stats_sh, self.mountpoint, self.interval, self.t0 = (
            stats_sh,
            mountpoint,
            interval,
            t0,
        )
        self.samples: list[Sample] = []
        self.stop = threading.Event()

    def take(self) -> None:
        before = time.perf_counter()
        out = subprocess.run(
            [str(self.stats_sh), str(self.mountpoint)], capture_output=True, text=True
        ).stdout
        after = time.perf_counter()
        self.samples.append(Sample(round((before + after) / 2 - self.t0, 4), parse_stats(out)))

    def run(self) -> None:
        next_at = time.perf_counter()
        while not self.stop.is_set():
            self.take()
            next_at += self.interval
            self.stop.wait(max(0.0, next_at - time.perf_counter()))


def one_rate(args: argparse.Namespace, slowfs: Path, limit: int) -> RateRun:
    run_seconds = args.skip + args.windows * args.window + 1.0
    scenario = tree_for(limit, run_seconds, args.requests_per_file)
    base = args.work.resolve()
    backing, mountpoint = base / "backing", base / "mnt"
    shutil.rmtree(backing, ignore_errors=True)
    counts = scenario.generate(backing / "tree")
    mountpoint.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        [
            str(slowfs / "mount.sh"),
            str(backing),
            str(mountpoint),
            *EFS_LIKE.split(),
            *args.slowfs_extra.split(),
        ],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        raise RuntimeError(f"slowfs mount failed:\n{mounted.stdout}{mounted.stderr}")
    stats_sh = slowfs / "stats.sh"
    command = [
        args.efspurge,
        str(mountpoint / "tree"),
        "--max-age-days", "30",
        FLAG, str(limit),
        "--max-runtime", f"{run_seconds:g}",
        "--log-format", "json",
        *shlex.split(args.efspurge_args),
    ]  # fmt: skip
    try:
        subprocess.run([str(stats_sh), str(mountpoint), "reset"], capture_output=True, check=True)
        t0 = time.perf_counter()
        sampler = Sampler(stats_sh, mountpoint, args.interval, t0)
        sampler.samples.append(Sample(0.0, {}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("EFSPURGE_BENCH_")}
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        sampler.start()
        out, err = proc.communicate()
        wall = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        sampler.take()
    finally:
        subprocess.run(
            [str(slowfs / "umount.sh"), str(mountpoint)], check=False, capture_output=True
        )
    if proc.returncode == 2 and FLAG in err:
        raise FlagRejected(err.strip()[-500:])
    final = {}
    for line in out.splitlines():
        if '"Purge operation completed"' in line:
            final = json.loads(line).get("extra_fields", {})
    after = bench.count_tree(backing / "tree", time.time() - bench.AGE_DAYS * bench.DAY)
    problem = ""
    if proc.returncode not in (0, 5):
        problem = f"exit code {proc.returncode}: {(err or out).strip()[-300:]}"
    elif (after.new_files, after.dirs, after.symlinks) != (
        counts.new_files,
        counts.dirs,
        counts.symlinks,
    ):
        problem = f"kept entries changed: {asdict(after)} vs generated {asdict(counts)}"
    elif proc.returncode == 0 and after.old_files:
        problem = f"exit 0 but {after.old_files} old files left"
    shutil.rmtree(backing, ignore_errors=True)
    samples = sampler.samples
    ops = frozenset(args.count.split(",")) if args.count else None
    return RateRun(
        limit=limit,
        files=counts.old_files + counts.new_files,
        exit_code=proc.returncode,
        wall_seconds=round(wall, 3),
        deleted=counts.old_files - after.old_files,
        verified=not problem,
        problem=problem,
        samples=[asdict(s) for s in samples],
        windows=windows(
            samples,
            limit,
            wall,
            window=args.window,
            skip=args.skip,
            tolerance=args.tolerance,
            ops=ops,
        ),
        totals=samples[-1].counts,
        final_record=final,
    )


class FlagRejected(Exception):
    pass


def format_report(runs: list[RateRun], tolerance: float) -> str:
    lines = [
        "| limit (ops/s) | window (s) | slowfs requests/s | deviation | within "
        f"±{tolerance:.0%} | main requests/s |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        for w in run.windows:
            top = sorted(
                ((op, r) for op, r in w["by_op_per_s"].items() if op not in NOT_COUNTED),
                key=lambda kv: -kv[1],
            )[:4]
            main = ", ".join(f"{op} {r:,.0f}" for op, r in top)
            lines.append(
                f"| {run.limit:,} | {w['start_s']:g}-{w['end_s']:g} | {w['ops_per_s']:,.0f} | "
                f"{w['deviation']:+.1%} | {'yes' if w['within'] else '**no**'} | {main} |"
            )
        if not run.windows:
            lines.append(f"| {run.limit:,} | (no whole window: run {run.wall_seconds} s) | | | | |")
    lines.append("")
    lines.append(
        "| limit | files | exit | wall (s) | deleted | verified | windows within | "
        "efspurge's final record (rate keys) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for run in runs:
        within = sum(w["within"] for w in run.windows)
        keys = {
            k: v
            for k, v in run.final_record.items()
            if any(s in k for s in ("rate", "ops", "wait", "limit", "per_second"))
        }
        lines.append(
            f"| {run.limit:,} | {run.files:,} | {run.exit_code} | {run.wall_seconds} | "
            f"{run.deleted:,} | {'yes' if run.verified else 'NO: ' + run.problem} | "
            f"{within}/{len(run.windows)} | {json.dumps(keys)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ratelimit"))
    parser.add_argument("--work", type=Path, default=Path("/dev/shm/efspurge-rl"))
    parser.add_argument("--rates", default="500,2000,5000")
    parser.add_argument("--window", type=float, default=5.0, help="window length (s)")
    parser.add_argument("--windows", type=int, default=3, help="whole windows to measure")
    parser.add_argument("--skip", type=float, default=1.0, help="seconds left out at the start")
    parser.add_argument("--interval", type=float, default=0.5, help="stats.sh sampling (s)")
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument(
        "--count",
        default="",
        help="comma-separated slowfs requests that count (default: all but release, "
        "releasedir, forget)",
    )
    parser.add_argument(
        "--requests-per-file",
        type=float,
        default=0.5,
        help="lowest expected slowfs requests per file, to size the trees (default 0.5: an "
        "unlink for every old file, lstat from the cache)",
    )
    parser.add_argument("--efspurge", default=shutil.which("efspurge") or "efspurge")
    parser.add_argument("--efspurge-args", default="")
    parser.add_argument("--slowfs-dir", type=Path)
    parser.add_argument(
        "--slowfs-extra",
        default="",
        metavar="OPTIONS",
        help="more slowfs options, e.g. max_ops=2000 to check the measurement itself against "
        "slowfs's own limit (it counts the same requests as the default --count)",
    )
    parser.add_argument("--tiny", action="store_true", default=bench.tiny_mode())
    args = parser.parse_args(argv)
    if args.tiny:
        args.window, args.windows, args.skip, args.interval = 1.0, 2, 0.5, 0.25
    if not accepts_flag(args.efspurge):
        print(
            f"ratelimit.py: {args.efspurge} does not accept {FLAG} (see issue 14); "
            "nothing to measure",
            file=sys.stderr,
        )
        return EXIT_NO_FLAG
    try:
        slowfs = bench.find_slowfs(args.slowfs_dir)
    except FileNotFoundError as e:
        parser.error(str(e))
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    runs: list[RateRun] = []
    try:
        for limit in rates:
            run = one_rate(args, slowfs, limit)
            runs.append(run)
            within = sum(w["within"] for w in run.windows)
            print(
                f"limit {limit:>6}: {within}/{len(run.windows)} windows within "
                f"±{args.tolerance:.0%}, {run.wall_seconds} s, exit {run.exit_code}"
                + ("" if run.verified else f", NOT VERIFIED: {run.problem}"),
                file=sys.stderr,
            )
    except FlagRejected as e:
        print(f"ratelimit.py: efspurge rejected {FLAG}: {e}", file=sys.stderr)
        return EXIT_NO_FLAG
    report = format_report(runs, args.tolerance)
    (args.out / "ratelimit-table.md").write_text(report + "\n")
    (args.out / "ratelimit.json").write_text(
        json.dumps(
            {
                "options": f"{EFS_LIKE} {args.slowfs_extra}".strip(),
                "tiny": args.tiny,
                "runs": [asdict(r) for r in runs],
            },
            indent=1,
        )
    )
    print(report)
    if args.tiny:  # a smoke test: the runs must work and verify; windows are not judged
        return 0 if all(r.verified for r in runs) else 1
    ok = all(r.verified and r.windows and all(w["within"] for w in r.windows) for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
