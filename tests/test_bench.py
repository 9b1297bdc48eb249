"""Tiny runs of the benchmarks, so that they keep working. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


def run_bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """benchmarks/bench.py on trees below tmp_path, with this environment's efspurge first."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    return subprocess.run(
        [sys.executable, str(BENCH), "--root-base", str(tmp_path / "bench"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_benchmark_runs_and_verifies_every_tool(tmp_path):
    out = tmp_path / "results.json"
    result = run_bench(
        tmp_path,
        "--scenarios", "flat:300 balanced:2x2x5 deep:50x1 mixed:400@0.9",
        "--rounds", "2",
        "--tools", "efspurge,find,find-xargs",
        "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert len(data["runs"]) == 4 * 2 * 3
    assert all(run["ok"] for run in data["runs"])
    by_key = {(r["scenario"], r["tool"]): r for r in data["summary"]}
    assert by_key[("flat:300", "find")]["ratio_to_find"] == 1.0
    # The same deterministic tree each time: every tool deleted the same number of files.
    for scenario in ("flat:300", "mixed:400@0.9"):
        deleted = {r["deleted"] for r in data["runs"] if r["scenario"] == scenario}
        assert len(deleted) == 1 and deleted.pop() > 0
    assert "| flat:300 | efspurge |" in result.stdout


def test_benchmark_reports_a_tool_that_deletes_too_much(tmp_path):
    result = run_bench(
        tmp_path,
        "--scenarios", "flat:50",
        "--rounds", "1",
        "--tool", "greedy=find {root} -type f -delete",
        "--tools", "find,greedy",
    )  # fmt: skip
    assert result.returncode == 1
    assert "greedy" in result.stderr and "FAILED" in result.stderr


# --- the documented commands, with tiny trees ----------------------------------------------

REPO = BENCH.parent.parent
PERFORMANCE = REPO / "PERFORMANCE.md"
# Options whose value is a place to write: the test points them below tmp_path.
PLACES = {"--root-base", "--work", "--out", "--chart", "--json", "--table"}
# Lines of the section that set up the environment this test already runs in.
SETUP = [
    shlex.split("python3 -m venv .venv && .venv/bin/pip install -e '.[bench]'"),
    ["PATH=$PWD/.venv/bin:$PATH"],
]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_it_yourself() -> list[list[str]]:
    """Every command of PERFORMANCE.md's "Run it yourself" code block, as argv lists."""
    section = PERFORMANCE.read_text().split("## Run it yourself", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "PERFORMANCE.md: no bash block in 'Run it yourself'"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    commands = [shlex.split(line, comments=True) for line in lines]
    return [c for c in commands if c]


def slowfs_problem() -> str | None:
    """Why slowfs cannot be mounted here, or None."""
    if os.geteuid() != 0:
        return "slowfs needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    try:
        folder = load_bench().find_slowfs()
    except FileNotFoundError as e:
        return str(e)
    built = [folder / "slowfs", Path(os.environ.get("SLOWFS_BUILD_DIR", "/tmp/slowfs-build"))]
    if not (built[0].exists() or (built[1] / "slowfs").exists() or shutil.which("pkg-config")):
        return "slowfs is not built and cannot be built here"
    return None


COMMANDS = run_it_yourself()


def test_the_section_only_holds_commands_this_test_knows():
    for argv in COMMANDS:
        assert argv in SETUP or argv[:2] in (
            ["python", "benchmarks/bench.py"],
            ["python", "benchmarks/suite.py"],
            ["python", "benchmarks/ratelimit.py"],
            ["python", "benchmarks/gilcrowds.py"],
        ), f"PERFORMANCE.md 'Run it yourself' has a command this test does not run: {argv}"
    assert any(argv[1:2] == ["benchmarks/suite.py"] for argv in COMMANDS)


@pytest.mark.parametrize(
    "argv",
    [c for c in COMMANDS if c not in SETUP],
    ids=lambda c: f"{COMMANDS.index(c)}-{Path(c[1]).stem}",
)
def test_documented_command_runs_with_tiny_trees(argv, tmp_path):
    command = shlex.join(argv)
    argv = list(argv)
    needs_slowfs = "--slowfs" in argv or argv[1].endswith(
        ("suite.py", "ratelimit.py", "gilcrowds.py")
    )
    if needs_slowfs and (problem := slowfs_problem()):
        pytest.skip(problem)
    if argv[1].endswith("suite.py") and os.geteuid() != 0:
        pytest.skip("the suite's memory piece mounts a tmpfs: root only")
    argv[0] = sys.executable
    argv[1] = str(REPO / argv[1])
    for i, word in enumerate(argv[:-1]):
        if word in PLACES:
            argv[i + 1] = str(tmp_path / f"{i}-{Path(argv[i + 1]).name}")
    env = {
        **os.environ,
        "EFSPURGE_BENCH_TINY": "1",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    }
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if argv[1].endswith("ratelimit.py") and result.returncode == 3:
        pytest.skip(result.stderr.strip())  # efspurge has no --max-ops-per-second yet
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    if argv[1].endswith("gilcrowds.py"):  # processes x threads, without efspurge
        assert "| 4x25 |" in result.stdout
    else:
        assert "| efspurge" in result.stdout or "efspurge" in result.stdout


def test_a_missing_slowfs_is_a_clear_error(tmp_path):
    result = run_bench(
        tmp_path, "--scenarios", "flat:10", "--slowfs", "lat=100", "--slowfs-dir", "/nonexistent"
    )
    assert result.returncode == 2
    assert "slowfs not found" in result.stderr and "SLOWFS_DIR" in result.stderr
    assert "Traceback" not in result.stderr


def test_scenario_lists_split_on_spaces_semicolons_and_commas():
    bench = load_bench()
    names = [
        s.name for s in bench.parse_scenarios("flat:100000,balanced:10x3x100 mixed:20;deep:3x1")
    ]
    assert names == ["flat:100000", "balanced:10x3x100", "mixed:20", "deep:3x1"]
    assert bench.parse_scenarios("balanced:10,3,100@0.9")[0].params == (10, 3, 100)
    tiny = [s.name for s in bench.parse_scenarios("flat:10000000@0.9 balanced:10x2x200", tiny=True)]
    assert tiny == ["flat:2000@0.9", "balanced:3x2x5"]
    with pytest.raises(Exception, match="bad scenario"):
        bench.parse_scenarios("flat:many")


def test_a_bad_scenario_is_a_usage_error(tmp_path):
    result = run_bench(tmp_path, "--scenarios", "flat:1,2x")
    assert result.returncode == 2 and "bad scenario" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not shutil.which("cc") and not shutil.which("gcc"), reason="no C compiler")
def test_the_c_generator_makes_the_same_tree_as_python(tmp_path):
    bench = load_bench()
    scenario = bench.Scenario.parse("flat:3000@0.3")
    trees = {}
    for generator in ("python", "c"):
        bench.GENERATOR = generator
        root = tmp_path / generator
        counts = scenario.generate(root)
        listing = {}
        for entry in os.scandir(root):
            st = entry.stat(follow_symlinks=False)
            # Old or new, not the exact second: the two trees are made a moment apart.
            old = st.st_mtime < time.time() - bench.AGE_DAYS * 86400
            listing[entry.name] = (entry.is_file(follow_symlinks=False), old)
        trees[generator] = (counts, listing)
    assert trees["python"] == trees["c"]
    assert trees["c"][0].old_files == 900 and len(trees["c"][1]) == 3000


def test_summary_pairs_throughput_with_find_xargs_per_round():
    bench = load_bench()
    run = bench.RunResult
    results = [
        run("find-xargs", "s", 0, 2.0, 100, 1.0, True),
        run("efspurge", "s", 0, 1.0, 100, 1.0, True),
        run("find-xargs", "s", 1, 1.0, 100, 1.0, True),
        run("efspurge", "s", 1, 2.0, 100, 1.0, True),
        run("find-xargs", "s", 2, 3.0, 100, 1.0, True),
        run("efspurge", "s", 2, 2.0, 100, 1.0, True),
    ]
    rows = {r["tool"]: r for r in bench.summarize(results, ["find-xargs", "efspurge"])}
    assert rows["efspurge"]["throughput_vs_find_xargs"] == 1.5  # median of 2.0, 0.5, 1.5
    assert rows["find-xargs"]["throughput_vs_find_xargs"] == 1.0
    assert rows["efspurge"]["ratio_to_find"] is None


def test_the_table_splits_cpu_between_the_tool_and_the_fuse_daemon(tmp_path):
    # Where the time goes when a target is not met: the tool's user and system CPU, and the
    # FUSE daemon's, as medians per tool; a run without a daemon (tmpfs) shows the first two.
    bench = load_bench()
    run = bench.RunResult
    cpu = [(0.5, 1.0, 0.8), (0.7, 1.2, 0.9), (0.6, 1.1, 1.0)]
    results = [
        run(
            "efspurge",
            "s",
            i,
            1.0,
            10,
            1.0,
            True,
            extra=dict(cpu_user_s=u, cpu_sys_s=k, fs_daemon_cpu_s=d),
        )
        for i, (u, k, d) in enumerate(cpu)
    ] + [run("find", "s", 0, 1.0, 10, 1.0, True, extra=dict(cpu_user_s=0.1, cpu_sys_s=0.4))]
    rows = bench.summarize(results, ["efspurge", "find"])
    table = bench.format_table(rows).splitlines()
    assert "| 0.60 + 1.10 + 0.90 |" in table[2]
    assert "| 0.10 + 0.40 |" in table[3]
    # And measured for real: a command's own CPU time, children included.
    spin = tmp_path / "spin.py"
    spin.write_text(
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
    )
    measured = bench.run_tool(f"sh -c {shlex.quote(f'{sys.executable} {spin}')}")
    assert measured.user + measured.sys >= 0.25


# --- benchmarks/ratelimit.py: the window arithmetic on recorded samples -----------------------


def load_ratelimit():
    load_bench()
    sys.path.insert(0, str(BENCH.parent))
    try:
        spec = importlib.util.spec_from_file_location(
            "ratelimit_bench", BENCH.parent / "ratelimit.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH.parent))
    return module


# Recorded: benchmarks/ratelimit.py --rates 2000 --windows 2 --slowfs-extra max_ops=2000, with
# an efspurge that ignored the limit (slowfs's own cap of 2,000 requests/s held it), every
# other stats.sh sample. The run ended at 12.727 s.
RECORDED_OPS = ("lookup", "getattr", "opendir", "readdirplus", "unlink", "forget", "releasedir")
RECORDED = [
    (0.0, 0, 0, 0, 0, 0, 0, 0),
    (0.5178, 1, 1, 31, 47, 0, 0, 0),
    (1.5294, 1, 1, 214, 593, 1237, 1236, 0),
    (2.5222, 1, 1, 217, 630, 3182, 3181, 0),
    (3.5248, 1, 1, 218, 635, 5173, 5172, 0),
    (4.519, 813, 1, 218, 635, 6352, 6352, 0),
    (5.5158, 2202, 1, 218, 635, 6947, 6947, 0),
    (6.5141, 3471, 1, 218, 635, 7680, 7680, 0),
    (7.5228, 4878, 1, 218, 636, 8294, 8294, 0),
    (8.5138, 6142, 1, 219, 637, 9008, 9008, 0),
    (9.5179, 7484, 1, 219, 637, 9678, 9677, 0),
    (10.5188, 8801, 1, 221, 641, 10356, 10355, 0),
    (11.5253, 10141, 1, 221, 641, 11040, 11039, 0),
    (12.5215, 11400, 1, 221, 643, 11670, 11670, 68),
]


def test_rate_windows_on_recorded_samples():
    rl = load_ratelimit()
    samples = [rl.Sample(t, dict(zip(RECORDED_OPS, row, strict=True))) for t, *row in RECORDED]
    windows = rl.windows(samples, 2000, 12.727)
    # Whole 5-s windows after the first second that end by the last sample: 1-6 and 6-11.
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(1.0, 6.0), (6.0, 11.0)]
    assert all(w["within"] for w in windows)
    assert windows[0]["ops_per_s"] == pytest.approx(1994, rel=0.02)
    assert windows[1]["ops_per_s"] == pytest.approx(2000, rel=0.02)
    # FORGET (and RELEASE, RELEASEDIR) are not round trips of the tool: left out, but shown.
    assert "forget" in windows[0]["by_op_per_s"]
    counted = sum(r for op, r in windows[1]["by_op_per_s"].items() if op != "forget")
    assert counted == pytest.approx(windows[1]["ops_per_s"], abs=1)
    # Against a limit of 5,000 the same run is far outside +-10 %.
    assert not any(w["within"] for w in rl.windows(samples, 5000, 12.727))
    # Only unlinks: --count unlink.
    unlinks = rl.windows(samples, 2000, 12.727, ops=frozenset({"unlink"}))
    # unlinks at 6 s (between 6,947 at 5.5158 s and 7,680 at 6.5141 s) and at 11 s, interpolated
    at6 = 6947 + (7680 - 6947) * (6 - 5.5158) / (6.5141 - 5.5158)
    at11 = 10356 + (11040 - 10356) * (11 - 10.5188) / (11.5253 - 10.5188)
    assert unlinks[1]["ops_per_s"] == pytest.approx((at11 - at6) / 5, abs=0.1)


def test_rate_windows_interpolate_and_stop_at_the_end():
    rl = load_ratelimit()
    # 100 counted requests per second exactly, sampled every 0.5 s, for 12.2 s.
    samples = [rl.Sample(k / 2, {"unlink": 50 * k, "forget": 50 * k}) for k in range(25)]
    windows = rl.windows(samples, 100, 12.2, window=5, skip=1)
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(1.0, 6.0), (6.0, 11.0)]
    assert [w["ops_per_s"] for w in windows] == [100.0, 100.0]
    assert [w["deviation"] for w in windows] == [0.0, 0.0]
    # Boundaries between samples are interpolated: 1.25-2.25 s holds 100 requests.
    assert rl.value_at(samples, 2.25) - rl.value_at(samples, 1.25) == pytest.approx(100)
    # +-10 % is inclusive; a run that ends before a whole window has none.
    assert rl.windows(samples, 110, 12.2)[0]["within"]
    assert not rl.windows(samples, 111.2, 12.2)[0]["within"]
    assert rl.windows(samples, 100, 5.9) == []


def test_stats_output_is_parsed():
    rl = load_ratelimit()
    text = """op                count   errors     total_ms     avg_us    wait_ms
lookup                1        0          1.1     1080.3        0.0
unlink               50        0        125.9     2518.3        0.0
forget               50        0          0.0        0.0        0.0
total_requests 56
fd_limit 20000
"""
    assert rl.parse_stats(text) == {"lookup": 1, "unlink": 50, "forget": 50}
    assert rl.counted(rl.parse_stats(text), None) == 51


def test_ratelimit_benchmark_says_clearly_when_the_flag_is_missing(tmp_path):
    fake = tmp_path / "efspurge"
    fake.write_text("#!/bin/sh\necho 'usage: efspurge [--max-age-days DAYS] path'\n")
    fake.chmod(0o755)
    result = subprocess.run(
        [sys.executable, str(BENCH.parent / "ratelimit.py"), "--efspurge", str(fake),
         "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 3
    assert "does not accept --max-ops-per-second" in result.stderr
    assert "Traceback" not in result.stderr
