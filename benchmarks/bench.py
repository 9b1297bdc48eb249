#!/usr/bin/env python3
"""efspurge benchmark: efspurge against `find -delete` (and other peers) on identical trees.

For each scenario and round, every tool gets a freshly generated copy of the same
deterministic tree, in interleaved order (A B A B ...). After every run the tree is checked:
exactly the old regular files must be gone, and everything else must still be there.
Reported per tool and scenario: median wall time, files deleted per second, peak RSS of the
process, the time ratio to `find` and the throughput ratio to `find | xargs -P 64 rm`, both
paired round by round.

Works on any filesystem. To measure a latency filesystem, generate on a backing store and
mount it before each run (cold caches) with --mount/--umount hooks, or use --slowfs, which
does that with slowfs, the project's latency-injecting FUSE filesystem. slowfs is not part of
this repository: point --slowfs-dir (or $SLOWFS_DIR) at its folder (the one with build.sh,
mount.sh, stats.sh, umount.sh); by default a `shared/tools/slowfs` next to the checkout is used.

    python benchmarks/bench.py --root-base /dev/shm/bench --scenarios flat:100000,balanced:10x3x100
    python benchmarks/bench.py --root-base /dev/shm/sbench --scenarios balanced:10x2x200 \\
        --slowfs "lat_getattr=1000 lat_readdir=1000 lat_unlink=2500 lat_rmdir=2500 \\
                  lat_other=500 lat_opendir=0 entry_timeout=3 attr_timeout=3"

Scenario syntax: flat:N | balanced:FANOUTxDEPTHxPER_LEAF | deep:DEPTHxPER_LEVEL | mixed:N,
each optionally followed by @FRACTION_OLD (default 0.5), e.g. flat:1000000@0.9. Scenarios
are separated by spaces, ';' or ','.

Tiny mode (--tiny, or the environment variable EFSPURGE_BENCH_TINY=1) shrinks every scenario
to a few hundred files and runs one round: the same commands then finish in seconds, which is
how tests/test_bench.py keeps the documented commands working.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

DAY = 86_400
AGE_DAYS = 30
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY_ENV = "EFSPURGE_BENCH_TINY"
# Where slowfs may be found when neither --slowfs-dir nor $SLOWFS_DIR says: a copy inside the
# checkout, or the project's shared tools next to it (../shared, or ../../shared from a
# worktree).
SLOWFS_CANDIDATES = [
    HERE / "slowfs",
    REPO.parent / "shared" / "tools" / "slowfs",
    REPO.parent.parent / "shared" / "tools" / "slowfs",
]
SLOWFS_HELP = (
    "slowfs is the project's latency-injecting FUSE filesystem (a folder with build.sh, "
    "mount.sh, stats.sh and umount.sh; it needs root, /dev/fuse and libfuse3). It is not part "
    "of this repository: get the project's shared tools (shared/tools/slowfs) and pass "
    "--slowfs-dir DIR or set SLOWFS_DIR=DIR."
)


def find_slowfs(explicit: Path | str | None = None) -> Path:
    """The slowfs folder: explicit, else $SLOWFS_DIR, else the first candidate that exists.

    Raises FileNotFoundError with a message that says where to get it."""
    if explicit is None and os.environ.get("SLOWFS_DIR"):
        explicit = os.environ["SLOWFS_DIR"]
    candidates = [Path(explicit)] if explicit is not None else SLOWFS_CANDIDATES
    for candidate in candidates:
        if (candidate / "mount.sh").is_file():
            return candidate.resolve()
    where = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"slowfs not found (looked in {where}). {SLOWFS_HELP}")


def tiny_mode() -> bool:
    return os.environ.get(TINY_ENV, "").strip().lower() not in ("", "0", "no", "false")


# --- deterministic trees ---------------------------------------------------------------------


@dataclass
class TreeCounts:
    old_files: int = 0
    new_files: int = 0
    dirs: int = 0
    symlinks: int = 0

    def add(self, other: TreeCounts) -> None:
        self.old_files += other.old_files
        self.new_files += other.new_files
        self.dirs += other.dirs
        self.symlinks += other.symlinks


class TreeWriter:
    """Creates files with fixed ages. File number i is old when its slot in a fixed
    pseudo-random permutation falls under the old fraction: same tree every time."""

    def __init__(self, fraction_old: float) -> None:
        now = time.time()
        self.old_time = now - 100 * DAY
        self.new_time = now - 1 * DAY
        self.fraction_old = fraction_old
        self.counts = TreeCounts()
        self.index = 0

    def file(self, dir_fd: int, name: str) -> None:
        fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644, dir_fd=dir_fd)
        old = (self.index * 7919) % 1000 < self.fraction_old * 1000
        self.index += 1
        stamp = self.old_time if old else self.new_time
        os.utime(fd, (stamp, stamp))
        os.close(fd)
        if old:
            self.counts.old_files += 1
        else:
            self.counts.new_files += 1

    def mkdir(self, dir_fd: int, name: str) -> int:
        os.mkdir(name, dir_fd=dir_fd)
        self.counts.dirs += 1
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dir_fd)

    def symlink(self, target: str, dir_fd: int, name: str) -> None:
        os.symlink(target, name, dir_fd=dir_fd)
        self.counts.symlinks += 1


# Flat trees of this many files or more are made by the C helper (fastgen.c) when a compiler
# is available: ~4 us per file with two threads on tmpfs instead of ~11 us in Python.
FAST_MIN = 20_000
GENERATOR = "auto"  # auto | c | python (--generator)
_FASTGEN: list[Path | None] = []


def fast_generator() -> Path | None:
    """Compile benchmarks/fastgen.c once (cached by its hash); None without a C compiler."""
    if _FASTGEN:
        return _FASTGEN[0]
    source = HERE / "fastgen.c"
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    binary = None
    if compiler and source.is_file():
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        binary = cache / "efspurge-bench" / f"fastgen-{digest}"
        if not binary.exists():
            binary.parent.mkdir(parents=True, exist_ok=True)
            tmp = binary.with_suffix(f".{os.getpid()}.tmp")
            done = subprocess.run(
                [compiler, "-O2", "-pthread", "-o", str(tmp), str(source)],
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                tmp.replace(binary)
            else:
                print(f"fastgen: compile failed, using Python:\n{done.stderr}", file=sys.stderr)
                binary = None
    _FASTGEN.append(binary)
    return binary


def gen_flat(w: TreeWriter, fd: int, n: int) -> None:
    helper = None
    if GENERATOR == "c" or (GENERATOR == "auto" and n >= FAST_MIN):
        helper = fast_generator()
        if helper is None and GENERATOR == "c":
            raise RuntimeError("--generator c: no C compiler (cc/gcc) to build fastgen.c")
    if helper is None or w.index != 0:
        for i in range(n):
            w.file(fd, f"file-{i:08d}.tmp")
        return
    threads = max(1, min(8, len(os.sched_getaffinity(0))))
    done = subprocess.run(
        [
            str(helper),
            f"/proc/self/fd/{fd}",
            str(n),
            repr(w.fraction_old * 1000),
            str(round(w.old_time * 1e9)),
            str(round(w.new_time * 1e9)),
            str(threads),
        ],
        pass_fds=(fd,),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"fastgen failed: {done.stderr.strip()}")
    old, new = (int(x) for x in done.stdout.split())
    w.counts.old_files += old
    w.counts.new_files += new
    w.index += n


def gen_balanced(w: TreeWriter, fd: int, fanout: int, depth: int, per_leaf: int) -> None:
    if depth == 0:
        for i in range(per_leaf):
            w.file(fd, f"f{i:06d}.dat")
        return
    for i in range(fanout):
        sub = w.mkdir(fd, f"d{i:03d}")
        try:
            gen_balanced(w, sub, fanout, depth - 1, per_leaf)
        finally:
            os.close(sub)


def gen_deep(w: TreeWriter, fd: int, depth: int, per_level: int) -> None:
    current = os.dup(fd)
    try:
        for level in range(depth):
            for i in range(per_level):
                w.file(current, f"f{i}")
            nxt = w.mkdir(current, f"level{level:05d}")
            os.close(current)
            current = nxt
    finally:
        os.close(current)


ODD = ["with space", "ünïcödé", "new\nline", "*glob?", "-dash", ".hidden"]


def gen_mixed(w: TreeWriter, fd: int, n: int) -> None:
    """Directories of very different sizes, symlinks, dirs that become empty, odd names."""
    sizes = [1, 3, 10, 30, 100, 300, 1000, 3000]
    made, d = 0, 0
    while made < n:
        size = min(sizes[(d * 5) % len(sizes)], n - made)
        sub = w.mkdir(fd, f"group-{d:05d}")
        try:
            for i in range(size):
                name = f"{ODD[i % len(ODD)]}-{i}" if d % 7 == 3 else f"item-{i}"
                w.file(sub, name)
            made += size
            if d % 5 == 0:
                w.symlink("..", sub, "link-up")  # a loop, if followed
                w.symlink("/etc", sub, "link-out")
                w.symlink("missing", sub, "dangling")
            if d % 11 == 0:
                nested = w.mkdir(sub, "nested")
                try:
                    inner = w.mkdir(nested, "inner")
                    os.close(inner)
                finally:
                    os.close(nested)
        finally:
            os.close(sub)
        d += 1


KINDS = {"flat": 1, "balanced": 3, "deep": 2, "mixed": 1}


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str
    params: tuple[int, ...]
    fraction_old: float

    @classmethod
    def parse(cls, text: str) -> Scenario:
        spec, _, frac = text.partition("@")
        kind, _, params = spec.partition(":")
        try:
            fraction = float(frac) if frac else 0.5
            numbers = tuple(int(p) for p in params.split("x") if p)
        except ValueError:
            numbers, fraction = (), 0.5
        if kind not in KINDS or len(numbers) != KINDS[kind] or not 0 <= fraction <= 1:
            raise argparse.ArgumentTypeError(
                f"bad scenario {text!r}: expected flat:N, balanced:FxDxP, deep:DxP or mixed:N, "
                "optionally followed by @FRACTION_OLD"
            )
        return cls(text, kind, numbers, fraction)

    def tiny(self) -> Scenario:
        """The same shape with a few hundred files at most (tiny mode)."""
        p = self.params
        small = {
            "flat": lambda: (min(max(20, p[0] // 1000), 2000),),
            "balanced": lambda: (min(p[0], 3), min(p[1], 2), min(p[2], 5)),
            "deep": lambda: (min(p[0], 30), min(p[1], 2)),
            "mixed": lambda: (min(max(50, p[0] // 1000), 500),),
        }[self.kind]()
        if small == p:
            return self
        suffix = f"@{self.name.partition('@')[2]}" if "@" in self.name else ""
        name = f"{self.kind}:{'x'.join(str(n) for n in small)}{suffix}"
        return replace(self, name=name, params=small)

    def entries(self) -> int:
        """About how many inodes the tree needs (files, directories, symlinks)."""
        p = self.params
        if self.kind == "flat":
            return p[0]
        if self.kind == "balanced":
            fanout, depth, per_leaf = p
            return fanout**depth * per_leaf + sum(fanout**k for k in range(1, depth + 1))
        if self.kind == "deep":
            return p[0] * (p[1] + 1)
        return p[0] + p[0] // 100 + 50  # mixed: files, groups, symlinks, nested dirs

    def generate(self, root: Path) -> TreeCounts:
        root.mkdir(parents=True)
        w = TreeWriter(self.fraction_old)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            {"flat": gen_flat, "balanced": gen_balanced, "deep": gen_deep, "mixed": gen_mixed}[
                self.kind
            ](w, fd, *self.params)
        finally:
            os.close(fd)
        return w.counts


def split_scenarios(text: str) -> list[str]:
    """Split a scenario list on spaces, ';' and ',' (a comma before a letter starts a new one;
    the old comma form of parameters, balanced:10,3,100, is still read)."""
    words = [w for w in re.split(r"[\s;]+|,(?=[a-zA-Z])", text) if w]
    return [re.sub(r"(?<=\d),(?=\d)", "x", w) for w in words]


def parse_scenarios(text: str, tiny: bool = False) -> list[Scenario]:
    scenarios = [Scenario.parse(w) for w in split_scenarios(text)]
    return [s.tiny() for s in scenarios] if tiny else scenarios


def count_tree(root: Path, cutoff: float) -> TreeCounts:
    """What is there now, fd-relative so that long deep paths work."""
    counts = TreeCounts()
    stack = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    while stack:
        fd = stack.pop()
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    st = entry.stat(follow_symlinks=False)
                    if entry.is_symlink():
                        counts.symlinks += 1
                    elif entry.is_dir(follow_symlinks=False):
                        counts.dirs += 1
                        stack.append(os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd))
                    elif st.st_mtime < cutoff:
                        counts.old_files += 1
                    else:
                        counts.new_files += 1
        finally:
            os.close(fd)
    return counts


# --- tools --------------------------------------------------------------------------------


def default_tools(efspurge: str) -> dict[str, str]:
    return {
        "efspurge": f"{shlex.quote(efspurge)} {{root}} --max-age-days {{days}} --log-level WARNING",
        "find": "find {root} -type f -mtime +{days} -delete",
        "find-xargs": "find {root} -type f -mtime +{days} -print0 | xargs -0 -r -n 200 -P 64 rm -f",
    }


@dataclass
class RunResult:
    tool: str
    scenario: str
    round: int
    wall_seconds: float
    deleted: int
    peak_rss_mb: float
    ok: bool
    problem: str = ""
    extra: dict = field(default_factory=dict)


GNU_TIME = shutil.which("time", path="/usr/bin:/bin")


@dataclass
class ToolRun:
    wall: float
    rss_mb: float
    code: int
    out: str
    user: float = 0.0  # CPU seconds of the tool and every process it waited for
    sys: float = 0.0


def run_tools(commands: list[str]) -> ToolRun:
    """Run several commands at once (one shard each); wall time until the last one ends."""
    if len(commands) == 1:
        return run_tool(commands[0])
    with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
        start = time.perf_counter()
        parts = list(pool.map(run_tool, commands))
        wall = time.perf_counter() - start
    return ToolRun(
        wall=wall,
        rss_mb=max(p.rss_mb for p in parts),
        code=next((p.code for p in parts if p.code != 0), 0),
        out="\n".join(p.out for p in parts),
        user=sum(p.user for p in parts),
        sys=sum(p.sys for p in parts),
    )


def run_tool(command: str) -> ToolRun:
    """Run a command; return wall time, the process's peak RSS (MiB), exit code, output tail
    and CPU time (user and system, the tool's processes together, from ``wait4``).

    The peak RSS comes from GNU time (Debian package ``time``) when installed: the kernel's
    ``ru_maxrss`` of a child includes its parent's size at fork time, and GNU time is a small
    parent. Without it, the figure includes this harness's own memory.
    """
    argv = ["/bin/sh", "-c", command] if "|" in command else shlex.split(command)
    rss_file = None
    if GNU_TIME:
        rss_fd, rss_file = tempfile.mkstemp(prefix="bench-rss-")
        os.close(rss_fd)
        argv = [GNU_TIME, "-f", "%M", "-o", rss_file, *argv]
    # The measured tools get the benchmark's environment without its own EFSPURGE_BENCH_*
    # settings: efspurge refuses EFSPURGE_* variables it does not know (a misspelled option).
    env = {k: v for k, v in os.environ.items() if not k.startswith("EFSPURGE_BENCH_")}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    rss_kib = usage.ru_maxrss
    if rss_file:
        with open(rss_file) as f:
            lines = f.read().split()
        os.unlink(rss_file)
        rss_kib = int(lines[-1]) if lines and lines[-1].isdigit() else rss_kib
    return ToolRun(
        wall,
        rss_kib / 1024,
        code,
        out.decode(errors="replace")[-2000:],
        user=usage.ru_utime,
        sys=usage.ru_stime,
    )


def daemon_pids(mountpoint: Path) -> list[int]:
    """The processes serving a FUSE mount: those whose command line names the mount point."""
    wanted = os.fsencode(str(mountpoint))
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if wanted in args and not args[0].endswith(b"sh"):
            pids.append(int(entry))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (threads included)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


class Mounter:
    """Mount a backing tree before a run and unmount after, via shell hooks."""

    def __init__(self, mount: str | None, umount: str | None) -> None:
        self.mount_cmd, self.umount_cmd = mount, umount

    @property
    def active(self) -> bool:
        return bool(self.mount_cmd)

    def mount(self, backing: Path, mountpoint: Path) -> None:
        mountpoint.mkdir(parents=True, exist_ok=True)
        self._run(self.mount_cmd, backing, mountpoint)

    def umount(self, backing: Path, mountpoint: Path) -> None:
        self._run(self.umount_cmd, backing, mountpoint)

    @staticmethod
    def _run(command: str | None, backing: Path, mountpoint: Path) -> None:
        """Run a hook quietly; its output is shown only when it fails."""
        if not command:
            return
        env = {**os.environ, "BENCH_BACKING": str(backing), "BENCH_MOUNT": str(mountpoint)}
        done = subprocess.run(
            command, shell=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        if done.returncode != 0:
            sys.stderr.write(done.stdout.decode(errors="replace"))
            raise subprocess.CalledProcessError(done.returncode, command)


def scale_latency(options: str, factor: float) -> str:
    """Multiply every lat_*=N in a slowfs option string by factor (0 stays 0)."""
    out = []
    for word in options.split():
        key, _, value = word.partition("=")
        if key.startswith("lat_") and value.isdigit():
            word = f"{key}={round(int(value) * factor)}"
        out.append(word)
    return " ".join(out)


def unlink_latency_ms(options: str) -> float | None:
    for word in options.split():
        key, _, value = word.partition("=")
        if key in ("lat_unlink", "lat_other", "lat") and value.isdigit():
            return int(value) / 1000
    return None


def slowfs_hooks(slowfs_dir: Path, options: str) -> tuple[str, str]:
    mount = f'{shlex.quote(str(slowfs_dir / "mount.sh"))} "$BENCH_BACKING" "$BENCH_MOUNT" {options}'
    umount = f'{shlex.quote(str(slowfs_dir / "umount.sh"))} "$BENCH_MOUNT"'
    return mount, umount


def one_run(
    tool: str,
    command: str,
    scenario: Scenario,
    rnd: int,
    base: Path,
    mounter: Mounter,
    shards: int = 1,
) -> RunResult:
    backing = base / "backing"
    if backing.exists():
        shutil.rmtree(backing)
    started = time.perf_counter()
    counts = scenario.generate(backing / "tree")
    generate_seconds = time.perf_counter() - started
    # With shards, the tree is mounted once per shard: separate mounts behave like separate
    # clients, each with its own directory locks and request queue.
    mountpoints = [base / (f"mnt{i}" if shards > 1 else "mnt") for i in range(shards)]
    targets = [backing / "tree"] * shards
    mounted: list[Path] = []
    try:
        if mounter.active:
            for mountpoint in mountpoints:
                mounter.mount(backing, mountpoint)
                mounted.append(mountpoint)
            targets = [m / "tree" for m in mountpoints]
        commands = [command.format(root=shlex.quote(str(t)), days=AGE_DAYS) for t in targets]
        if shards > 1:
            commands = [
                f"{c} --shard-count {shards} --shard-index {i}" for i, c in enumerate(commands)
            ]
        daemons = [pid for m in mounted for pid in daemon_pids(m)]
        daemon_before = cpu_seconds(daemons)
        run = run_tools(commands)
        daemon_cpu = cpu_seconds(daemons) - daemon_before
    finally:
        for mountpoint in mounted:
            mounter.umount(backing, mountpoint)
    after = count_tree(backing / "tree", time.time() - AGE_DAYS * DAY)
    expected = TreeCounts(0, counts.new_files, counts.dirs, counts.symlinks)
    wall, rss, code, out = run.wall, run.rss_mb, run.code, run.out
    problem = ""
    if code != 0:
        problem = f"exit code {code}: {out.strip()[-300:]}"
    elif after != expected:
        problem = f"tree after run {asdict(after)} != expected {asdict(expected)}"
    extra: dict = {}
    if tool == "efspurge":
        for line in out.splitlines():
            if '"Purge operation completed"' in line:
                extra = json.loads(line)["extra_fields"]
        extra["shards"] = shards
    return RunResult(
        tool=tool,
        scenario=scenario.name,
        round=rnd,
        wall_seconds=round(wall, 4),
        deleted=counts.old_files - after.old_files,
        peak_rss_mb=round(rss, 1),
        ok=not problem,
        problem=problem,
        extra={
            **{
                k: extra[k]
                for k in ("peak_memory_mb", "io_threads", "processes", "errors", "shards")
                if k in extra
            },
            "files": counts.old_files + counts.new_files,
            "generate_seconds": round(generate_seconds, 3),
            # Where the CPU went: the tool (user, kernel on its behalf) and the FUSE daemon.
            "cpu_user_s": round(run.user, 3),
            "cpu_sys_s": round(run.sys, 3),
            **({"fs_daemon_cpu_s": round(daemon_cpu, 3)} if daemons else {}),
        },
    )


# --- reporting ----------------------------------------------------------------------------


def _paired(runs: list[RunResult], base: dict[int, float], invert: bool) -> float | None:
    """Median over the rounds both ran of tool/base wall time (or base/tool: throughput)."""
    ratios = [
        (base[r.round] / r.wall_seconds if invert else r.wall_seconds / base[r.round])
        for r in runs
        if r.round in base and r.wall_seconds > 0 and base[r.round] > 0
    ]
    return round(statistics.median(ratios), 3) if ratios else None


def summarize(results: list[RunResult], tools: list[str]) -> list[dict]:
    """One row per scenario and tool. ratio_to_find: wall time / find's wall time in the same
    round (paired median; < 1 is faster); throughput_vs_find_xargs: find-xargs's wall time /
    the tool's, paired (files per second relative to `find | xargs -P 64 rm`; > 1 is faster)."""
    rows = []
    for scenario in dict.fromkeys(r.scenario for r in results):
        mine = [r for r in results if r.scenario == scenario]
        find_by_round = {r.round: r.wall_seconds for r in mine if r.tool == "find"}
        xargs_by_round = {r.round: r.wall_seconds for r in mine if r.tool == "find-xargs"}
        for tool in tools:
            runs = [r for r in mine if r.tool == tool]
            if not runs:
                continue
            wall = statistics.median(r.wall_seconds for r in runs)
            efspurge_mb = [r.extra["peak_memory_mb"] for r in runs if "peak_memory_mb" in r.extra]
            rows.append(
                {
                    "scenario": scenario,
                    "tool": tool,
                    "runs": len(runs),
                    "median_wall_s": round(wall, 3),
                    "files_deleted_per_s": round(runs[0].deleted / wall) if wall else 0,
                    "median_peak_rss_mb": round(statistics.median(r.peak_rss_mb for r in runs), 1),
                    "median_reported_peak_mb": (
                        round(statistics.median(efspurge_mb), 1) if efspurge_mb else None
                    ),
                    "ratio_to_find": _paired(runs, find_by_round, invert=False),
                    "throughput_vs_find_xargs": _paired(runs, xargs_by_round, invert=True),
                    **_cpu_medians(runs),
                    "median_generate_s": round(
                        statistics.median(r.extra.get("generate_seconds", 0) for r in runs), 2
                    ),
                    "all_verified": all(r.ok for r in runs),
                }
            )
    return rows


def _cpu_medians(runs: list[RunResult]) -> dict:
    """Median CPU seconds per run: the tool's user and system time, and the FUSE daemon's."""
    out = {}
    for key in ("cpu_user_s", "cpu_sys_s", "fs_daemon_cpu_s"):
        values = [r.extra[key] for r in runs if key in r.extra]
        out[f"median_{key}"] = round(statistics.median(values), 3) if values else None
    return out


def _cpu_cell(r: dict) -> str:
    """'user + sys' of the tool, '+ daemon' when a FUSE daemon served the run."""
    user, system = r.get("median_cpu_user_s"), r.get("median_cpu_sys_s")
    if user is None or system is None:
        return ""
    cell = f"{user:.2f} + {system:.2f}"
    daemon = r.get("median_fs_daemon_cpu_s")
    return cell if daemon is None else f"{cell} + {daemon:.2f}"


def format_table(rows: list[dict]) -> str:
    """The summary as a markdown table."""
    lines = [
        "| scenario | tool | runs | median wall (s) | files deleted/s | peak RSS (MB) "
        "| x find (paired median) | throughput x find-xargs (paired median) "
        "| CPU s: user + sys (+ FUSE daemon) | verified |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        ratio = "" if r["ratio_to_find"] is None else f"{r['ratio_to_find']:.2f}"
        speed = r.get("throughput_vs_find_xargs")
        speed = "" if speed is None else f"{speed:.2f}"
        rss = f"{r['median_peak_rss_mb']}"
        if r.get("median_reported_peak_mb") is not None:
            rss += f" ({r['median_reported_peak_mb']} all processes)"
        lines.append(
            f"| {r['scenario']} | {r['tool']} | {r['runs']} | {r['median_wall_s']:.3f} | "
            f"{r['files_deleted_per_s']:,} | {rss} | {ratio} | {speed} | {_cpu_cell(r)} | "
            f"{'yes' if r['all_verified'] else 'NO'} |"
        )
    return "\n".join(lines)


def print_table(rows: list[dict]) -> None:
    print(format_table(rows))


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "chart skipped: matplotlib is not installed (pip install '.[bench]')", file=sys.stderr
        )
        return None
    return plt


def draw_latency_chart(results: list[RunResult], path: Path, title: str) -> None:
    """Files deleted per second against unlink latency, one line per tool."""
    plt = _pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for tool in dict.fromkeys(r.tool for r in results):
        points: dict[float, list[float]] = {}
        for r in results:
            lat = r.extra.get("unlink_latency_ms")
            if r.tool == tool and lat and r.wall_seconds:
                points.setdefault(lat, []).append(r.deleted / r.wall_seconds)
        xs = sorted(points)
        ax.plot(xs, [statistics.median(points[x]) for x in xs], marker="o", label=tool)
    ax.set_xlabel("unlink latency (ms); lookups and listings scaled alike")
    ax.set_ylabel("files deleted per second (median)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"chart written to {path}")


def draw_chart(rows: list[dict], path: Path, title: str) -> None:
    plt = _pyplot()
    if plt is None:
        return
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    tools = list(dict.fromkeys(r["tool"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(1, len(tools))
    for t, tool in enumerate(tools):
        xs, walls, rates = [], [], []
        for s, scenario in enumerate(scenarios):
            match = [r for r in rows if r["scenario"] == scenario and r["tool"] == tool]
            if match:
                xs.append(s + t * width)
                walls.append(match[0]["median_wall_s"])
                rates.append(match[0]["files_deleted_per_s"])
        axes[0].bar(xs, walls, width, label=tool)
        axes[1].bar(xs, rates, width, label=tool)
    for ax, label in zip(axes, ["median wall time (s)", "files deleted per second"], strict=True):
        ax.set_xticks([s + width * (len(tools) - 1) / 2 for s in range(len(scenarios))])
        ax.set_xticklabels(scenarios, rotation=15, fontsize=8)
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"chart written to {path}")


# --- main ---------------------------------------------------------------------------------

# Kernel memory per empty file on tmpfs (inode + dentry), measured: ~1.04 KB.
TMPFS_BYTES_PER_INODE = 1100


def _mount_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount holding path."""
    best = ("/", "")
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            mnt = fields[1].replace("\\040", " ")
            inside = str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best[0]):
                best = (mnt, fields[2])
    return best


def _mem_available() -> int | None:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def preflight(base: Path, scenarios: list[Scenario]) -> str | None:
    """A clear message when the largest tree cannot fit (inodes, or RAM for a tmpfs)."""
    need = max(s.entries() for s in scenarios) + 1000
    st = os.statvfs(base)
    if st.f_files and st.f_favail < need:
        return (
            f"{base} has {st.f_favail:,} free inodes, the largest scenario needs about "
            f"{need:,}: use a filesystem with more, or let the benchmark mount its own tmpfs "
            f"there, e.g. --tmpfs size=2g,nr_inodes={math.ceil(need * 1.1 / 1e6)}m (root only)"
        )
    mnt, fstype = _mount_of(base)
    available = _mem_available()
    if fstype == "tmpfs" and available is not None:
        ram = need * TMPFS_BYTES_PER_INODE
        if ram > 0.8 * available:
            return (
                f"the largest tree needs about {ram / 2**30:.1f} GiB of kernel memory on tmpfs "
                f"({mnt}), but only {available / 2**30:.1f} GiB is available"
            )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root-base", type=Path, help="where trees are generated")
    parser.add_argument(
        "--replot", type=Path, metavar="JSON", help="draw --chart from a saved --json file and exit"
    )
    parser.add_argument(
        "--scenarios",
        default="flat:100000 balanced:10x3x100 mixed:200000",
        help="list separated by spaces, ';' or ',' (default: the tmpfs targets)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--tools",
        default="efspurge,find",
        help="tools to run, among efspurge, find, find-xargs and any --tool you define",
    )
    parser.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="define a peer; COMMAND may use {root} and {days}",
    )
    parser.add_argument(
        "--tool-rounds",
        action="append",
        default=[],
        metavar="NAME=N",
        help="run this tool in the first N rounds only (e.g. find=2 in a slow latency sweep)",
    )
    parser.add_argument("--efspurge", default=shutil.which("efspurge") or "efspurge")
    parser.add_argument("--efspurge-args", default="", help="extra arguments for efspurge")
    parser.add_argument(
        "--mount", help="shell command run before each run ($BENCH_BACKING, $BENCH_MOUNT)"
    )
    parser.add_argument("--umount", help="shell command run after each run")
    parser.add_argument(
        "--slowfs", metavar="OPTIONS", help="mount each tree through slowfs with these options"
    )
    parser.add_argument(
        "--slowfs-dir",
        type=Path,
        help="slowfs folder (build.sh, mount.sh, ...); default $SLOWFS_DIR, else "
        "shared/tools/slowfs next to the checkout",
    )
    parser.add_argument(
        "--latency-scale",
        default="1",
        help="with --slowfs: comma-separated factors applied to every lat_* option, one "
        "series per factor (e.g. 0.25,0.5,1,2) for a throughput-against-latency chart",
    )
    parser.add_argument(
        "--shards",
        default="1",
        help="comma-separated shard counts for efspurge (e.g. 1,2,4,8): N processes with "
        "--shard-count N, each on its own mount of the tree when --slowfs/--mount is used",
    )
    parser.add_argument(
        "--tmpfs",
        metavar="OPTIONS",
        help="mount a private tmpfs with these options on --root-base for the whole benchmark "
        "(root only), e.g. size=2g,nr_inodes=12m for ten million files; unmounted at the end",
    )
    parser.add_argument(
        "--generator",
        choices=["auto", "c", "python"],
        default="auto",
        help=f"how flat trees are made: auto uses the C helper (fastgen.c, compiled on the fly) "
        f"from {FAST_MIN:,} files on when a C compiler is there",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        default=tiny_mode(),
        help=f"shrink every scenario to a few hundred files and run one round (also "
        f"{TINY_ENV}=1): a smoke test of the same command",
    )
    parser.add_argument("--json", type=Path, help="write all runs and the summary here")
    parser.add_argument("--table", type=Path, help="write the markdown table here too")
    parser.add_argument("--chart", type=Path, help="draw a PNG chart (needs matplotlib)")
    parser.add_argument("--title", default="efspurge vs find")
    args = parser.parse_args(argv)

    if args.replot:
        data = json.loads(args.replot.read_text())
        if not args.chart:
            parser.error("--replot needs --chart")
        if any(r.get("extra", {}).get("unlink_latency_ms") for r in data["runs"]):
            draw_latency_chart([RunResult(**r) for r in data["runs"]], args.chart, args.title)
        else:
            draw_chart(data["summary"], args.chart, args.title)
        return 0
    if args.root_base is None:
        parser.error("--root-base is required")
    try:
        scenarios = parse_scenarios(args.scenarios, tiny=args.tiny)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    if not scenarios:
        parser.error("--scenarios is empty")
    rounds = min(args.rounds, 1) if args.tiny else args.rounds
    global GENERATOR
    GENERATOR = args.generator
    tools = default_tools(args.efspurge)
    if args.efspurge_args:
        tools["efspurge"] += " " + args.efspurge_args
    for definition in args.tool:
        name, _, command = definition.partition("=")
        tools[name] = command
    chosen = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in tools]
    if unknown:
        parser.error(f"unknown tool(s): {', '.join(unknown)}")
    tool_rounds: dict[str, int] = {}
    for item in args.tool_rounds:
        name, _, n = item.partition("=")
        if not n.isdigit():
            parser.error(f"--tool-rounds {item!r}: expected NAME=N")
        tool_rounds[name] = int(n)
    slowfs_dir = None
    if args.slowfs:
        try:
            slowfs_dir = find_slowfs(args.slowfs_dir)
        except FileNotFoundError as e:
            parser.error(str(e))
    factors = [float(f) for f in args.latency_scale.split(",")] if args.slowfs else [1.0]
    shard_counts = [int(n) for n in args.shards.split(",")]
    base = args.root_base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    mounted_tmpfs = False
    if args.tmpfs:
        if os.geteuid() != 0:
            parser.error("--tmpfs mounts a filesystem: run as root, or drop it")
        subprocess.run(["mount", "-t", "tmpfs", "-o", args.tmpfs, "tmpfs", str(base)], check=True)
        mounted_tmpfs = True
    try:
        problem = preflight(base, scenarios)
        if problem:
            print(f"bench.py: {problem}", file=sys.stderr)
            return 2
        results = run_all(
            args,
            scenarios,
            rounds,
            tools,
            chosen,
            tool_rounds,
            factors,
            shard_counts,
            base,
            slowfs_dir,
        )
    finally:
        shutil.rmtree(base / "backing", ignore_errors=True)
        if mounted_tmpfs:
            subprocess.run(["umount", str(base)], check=False)

    rows = summarize(results, list(dict.fromkeys(r.tool for r in results)))
    table = format_table(rows)
    print(table)
    if args.table:
        args.table.write_text(table + "\n")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"runs": [asdict(r) for r in results], "summary": rows, "tiny": args.tiny},
                indent=1,
            )
        )
    if args.chart:
        if len(factors) > 1:
            draw_latency_chart(results, args.chart, args.title)
        else:
            draw_chart(rows, args.chart, args.title)
    return 0 if all(r.ok for r in results) else 1


def run_all(
    args: argparse.Namespace,
    scenarios: list[Scenario],
    rounds: int,
    tools: dict[str, str],
    chosen: list[str],
    tool_rounds: dict[str, int],
    factors: list[float],
    shard_counts: list[int],
    base: Path,
    slowfs_dir: Path | None,
) -> list[RunResult]:
    results: list[RunResult] = []
    for factor in factors:
        mount, umount = args.mount, args.umount
        options = scale_latency(args.slowfs, factor) if args.slowfs else ""
        if slowfs_dir is not None:
            mount, umount = slowfs_hooks(slowfs_dir, options)
        mounter = Mounter(mount, umount)
        for scenario in scenarios:
            label = (
                scenario
                if len(factors) == 1
                else replace(
                    scenario, name=f"{scenario.name} unlink={unlink_latency_ms(options)}ms"
                )
            )
            runs = [(tool, 1) for tool in chosen if tool != "efspurge"]
            runs += [("efspurge", n) for n in shard_counts if "efspurge" in chosen]
            for rnd in range(rounds):
                # Interleave, and alternate who goes first, so drift hits every tool alike.
                order = runs if rnd % 2 == 0 else list(reversed(runs))
                for tool, shards in order:
                    if rnd >= tool_rounds.get(tool, rounds):
                        continue
                    name = tool if shards == 1 else f"efspurge x{shards}"
                    result = one_run(tool, tools[tool], label, rnd, base, mounter, shards)
                    result.tool = name
                    result.extra["unlink_latency_ms"] = unlink_latency_ms(options)
                    results.append(result)
                    flag = "ok" if result.ok else f"FAILED: {result.problem}"
                    print(
                        f"{label.name:>22} round {rnd} {name:>12}: "
                        f"{result.wall_seconds:8.3f} s {result.peak_rss_mb:7.1f} MB  {flag}",
                        file=sys.stderr,
                    )
    return results


if __name__ == "__main__":
    sys.exit(main())
