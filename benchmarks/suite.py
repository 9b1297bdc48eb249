#!/usr/bin/env python3
"""The performance targets of issue 13, measured in one command.

    python benchmarks/suite.py --out benchmarks/results/suite

runs four pieces with benchmarks/bench.py (every run verified: exactly the old regular files
gone, everything else still there), then writes OUT/summary.md (the targets table with the
measured figures, then every piece's table) and OUT/summary.json:

  sweep   slowfs latency sweep, balanced 20k tree (10x2x200), unlink 0.3, 0.6, 1.25, 2.5 and
          5 ms with lookups, getattr and listings scaled alike; efspurge, `find | xargs -P64
          rm` and `find -delete` (find in the first 2 rounds only: 3 to 52 s a run); the
          throughput ratio to find-xargs is paired per round. ~7 min.
  tmpfs   tmpfs flat 100k / balanced 10x3x100 / mixed 200k, defaults, against `find -delete`.
          ~3 min.
  slowfs  slowfs EFS-like latency, balanced 10x2x200, defaults: wall time (find-xargs
          alongside). ~1 min.
  memory  peak RSS, 1,000,000 and 10,000,000 files in ONE flat directory (90 % old) on a
          private tmpfs mounted for the piece (nr_inodes large enough; needs root and ~11 GiB
          of free RAM for the 10M tree's inodes), efspurge with defaults. The 10M tree is made
          by a C helper (fastgen.c): 98 s measured. ~5 min (10M run alone ~3 min).

--rounds (default 5: median of 5 interleaved runs) applies to sweep, tmpfs and slowfs; memory
runs once. --pieces picks some of them. With --tiny (or EFSPURGE_BENCH_TINY=1) every tree
shrinks to a few hundred files and every piece runs one round: a smoke test in seconds.
slowfs is found as bench.py finds it (--slowfs-dir, $SLOWFS_DIR, shared/tools/slowfs next to
the checkout).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench

EFS_LIKE = (
    "lat_getattr=1000 lat_readdir=1000 lat_unlink=2500 lat_rmdir=2500 lat_other=500 "
    "lat_opendir=0 entry_timeout=3 attr_timeout=3"
)
# Factors on EFS_LIKE: unlink 2.5 ms x 0.12, 0.24, 0.5, 1, 2 = 0.3, 0.6, 1.25, 2.5, 5 ms.
SWEEP_FACTORS = "0.12,0.24,0.5,1,2"
SWEEP_TREE = "balanced:10x2x200"
TMPFS_TREES = "flat:100000 balanced:10x3x100 mixed:200000"
SLOWFS_TREE = "balanced:10x2x200"
MEMORY_TREES = "flat:1000000@0.9 flat:10000000@0.9"
MEMORY_TMPFS = "size=1g,nr_inodes=11m"
PIECES = ["sweep", "tmpfs", "slowfs", "memory"]

# Issue 13's targets.
SWEEP_MIN_THROUGHPUT = 1.25
TMPFS_MAX_RATIO = 1.0
SLOWFS_MAX_WALL = 0.6
MEMORY_MAX_MB = 64.0
MEMORY_MAX_GROWTH = 0.10


def piece_args(piece: str, args: argparse.Namespace) -> list[str]:
    work = args.work / piece
    out = args.out
    common = [
        "--root-base", str(work),
        "--json", str(out / f"{piece}.json"),
        "--table", str(out / f"{piece}-table.md"),
        "--efspurge", args.efspurge,
    ]  # fmt: skip
    if args.efspurge_args:
        common += ["--efspurge-args", args.efspurge_args]
    if args.slowfs_dir:
        common += ["--slowfs-dir", str(args.slowfs_dir)]
    rounds = str(args.rounds)
    if piece == "sweep":
        return [
            *common,
            "--scenarios", SWEEP_TREE,
            "--tools", "efspurge,find-xargs,find",
            "--tool-rounds", "find=2",
            "--rounds", rounds,
            "--slowfs", EFS_LIKE,
            "--latency-scale", SWEEP_FACTORS,
            "--chart", str(out / "sweep.png"),
            "--title", "slowfs latency sweep, balanced 20k tree",
        ]  # fmt: skip
    if piece == "tmpfs":
        return [
            *common,
            "--scenarios", TMPFS_TREES,
            "--tools", "efspurge,find",
            "--rounds", rounds,
            "--chart", str(out / "tmpfs.png"),
            "--title", "tmpfs, defaults",
        ]  # fmt: skip
    if piece == "slowfs":
        return [
            *common,
            "--scenarios", SLOWFS_TREE,
            "--tools", "efspurge,find-xargs",
            "--rounds", rounds,
            "--slowfs", EFS_LIKE,
            "--chart", str(out / "slowfs.png"),
            "--title", "slowfs EFS-like latency, defaults",
        ]  # fmt: skip
    if piece == "memory":
        return [
            *common,
            "--scenarios", MEMORY_TREES,
            "--tools", "efspurge",
            "--rounds", "1",
            "--tmpfs", MEMORY_TMPFS,
        ]  # fmt: skip
    raise ValueError(piece)


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def _rss(row: dict) -> float:
    """efspurge's own peak_memory_mb (all its processes together) when reported."""
    reported = row.get("median_reported_peak_mb")
    return reported if reported is not None else row["median_peak_rss_mb"]


def targets(results: dict[str, dict], tiny: bool) -> list[dict]:
    """The rows of issue 13's table, from the pieces' JSON results."""
    rows: list[dict] = []

    def add(what: str, target: str, measured: str, met: bool | None) -> None:
        rows.append({"what": what, "target": target, "measured": measured, "met": met})

    def summary(piece: str) -> list[dict]:
        return results.get(piece, {}).get("summary", [])

    for r in summary("sweep"):
        if r["tool"] != "efspurge":
            continue
        ratio = r["throughput_vs_find_xargs"]
        verified = r["all_verified"]
        add(
            f"throughput vs find-xargs, slowfs sweep, {r['scenario']}",
            f">= {SWEEP_MIN_THROUGHPUT}x",
            f"{_fmt(ratio)}x ({r['files_deleted_per_s']:,} files/s)",
            None if ratio is None else ratio >= SWEEP_MIN_THROUGHPUT and verified,
        )
    for r in summary("tmpfs"):
        if r["tool"] != "efspurge":
            continue
        ratio = r["ratio_to_find"]
        add(
            f"tmpfs {r['scenario']}, defaults, time vs find -delete",
            f"<= {TMPFS_MAX_RATIO}x",
            f"{_fmt(ratio)}x ({r['median_wall_s']:.3f} s)",
            None if ratio is None else ratio <= TMPFS_MAX_RATIO and r["all_verified"],
        )
    for r in summary("slowfs"):
        if r["tool"] != "efspurge":
            continue
        add(
            f"slowfs EFS-like {r['scenario']}, defaults, wall",
            f"<= {SLOWFS_MAX_WALL} s",
            f"{r['median_wall_s']:.3f} s",
            r["median_wall_s"] <= SLOWFS_MAX_WALL and r["all_verified"],
        )
    memory = [r for r in summary("memory") if r["tool"] == "efspurge"]
    if memory:
        by_files = sorted(memory, key=lambda r: bench.Scenario.parse(r["scenario"]).params[0])
        small, large = by_files[0], by_files[-1]
        growth = _rss(large) / _rss(small) - 1 if _rss(small) else None
        generate = large.get("median_generate_s")
        add(
            f"peak RSS, {large['scenario']} (one flat directory, tmpfs), defaults",
            f"<= {MEMORY_MAX_MB:.0f} MB and < {MEMORY_MAX_GROWTH:.0%} above {small['scenario']}",
            f"{_rss(large)} MB vs {_rss(small)} MB ({_fmt(growth, '+.1%')}); "
            f"tree made in {generate} s",
            _rss(large) <= MEMORY_MAX_MB
            and growth is not None
            and growth < MEMORY_MAX_GROWTH
            and large["all_verified"],
        )
    return rows


def format_targets(rows: list[dict], tiny: bool) -> str:
    lines = []
    if tiny:
        lines.append("**Tiny mode: smoke-test sizes, not measurements.**\n")
    lines += ["| what | target | measured | met? |", "| --- | --- | --- | --- |"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "n/a"}[r["met"]]
        lines.append(f"| {r['what']} | {r['target']} | {r['measured']} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/suite"))
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/dev/shm/efspurge-suite"),
        help="where trees are generated (tmpfs; the memory piece mounts its own tmpfs below)",
    )
    parser.add_argument("--pieces", default=",".join(PIECES), help="comma-separated subset")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--efspurge", default=shutil.which("efspurge") or "efspurge")
    parser.add_argument("--efspurge-args", default="")
    parser.add_argument("--slowfs-dir", type=Path)
    parser.add_argument("--tiny", action="store_true", default=bench.tiny_mode())
    args = parser.parse_args(argv)
    pieces = [p.strip() for p in args.pieces.split(",") if p.strip()]
    unknown = set(pieces) - set(PIECES)
    if unknown:
        parser.error(f"unknown piece(s): {', '.join(sorted(unknown))} (choose from {PIECES})")
    if {"sweep", "slowfs"} & set(pieces):
        try:
            bench.find_slowfs(args.slowfs_dir)
        except FileNotFoundError as e:
            parser.error(f"{e} (or leave out the slowfs pieces: --pieces tmpfs,memory)")
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = args.work.resolve()
    tiny = ["--tiny"] if args.tiny else []
    results: dict[str, dict] = {}
    codes: dict[str, int] = {}
    durations: dict[str, float] = {}
    for piece in pieces:
        print(f"=== {piece} ===", file=sys.stderr)
        started = time.perf_counter()
        codes[piece] = bench.main([*piece_args(piece, args), *tiny])
        durations[piece] = round(time.perf_counter() - started, 1)
        path = args.out / f"{piece}.json"
        if codes[piece] != 2 and path.exists():
            results[piece] = json.loads(path.read_text())
        print(f"=== {piece}: exit {codes[piece]}, {durations[piece]} s ===", file=sys.stderr)
        shutil.rmtree(args.work / piece, ignore_errors=True)

    rows = targets(results, args.tiny)
    text = [
        "# Issue 13 targets, measured by benchmarks/suite.py",
        "",
        format_targets(rows, args.tiny),
    ]
    for piece in pieces:
        table = args.out / f"{piece}-table.md"
        text += ["", f"## {piece} ({durations[piece]} s, exit {codes[piece]})", ""]
        text.append(table.read_text().strip() if table.exists() else "(no result)")
    (args.out / "summary.md").write_text("\n".join(text) + "\n")
    (args.out / "summary.json").write_text(
        json.dumps(
            {"targets": rows, "exit_codes": codes, "seconds": durations, "tiny": args.tiny},
            indent=1,
        )
    )
    print("\n".join(text))
    return max(codes.values(), default=0)


if __name__ == "__main__":
    sys.exit(main())
