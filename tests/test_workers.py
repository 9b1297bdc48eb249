"""Worker processes (--processes N): batches are pipelined, one more in flight per worker than
it has threads. A batch and its reply can each be far larger than a socket's buffer; neither
side may wait on the other for ever, and every reply must reach the batch it belongs to, in
whatever order a worker with threads answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import EFSPURGE, final, make_file, purge, records, run_cli, snapshot

from efspurge.filepurge import FileRules
from efspurge.plan import StopFlag
from efspurge.workers import FileJob, WorkerPool


def long_named_files(root: Path, count: int) -> tuple[set[str], set[str]]:
    """`count` files with 240-character names, every third one young. Returns (old, young)."""
    old, young = set(), set()
    for i in range(count):
        name = f"{i:06d}" + "x" * 234
        keep = i % 3 == 0
        make_file(root / name, old=not keep)
        (young if keep else old).add(f"file:{name}")
    return old, young


@pytest.mark.parametrize("processes", [2, 3])
def test_large_batches_and_replies_in_flight_together(tmp_path, processes):
    # 1,000 names of 240 characters make a batch of ~250 KB, and its manifest lines a reply of
    # ~300 KB, both over the socket buffer: with two batches in flight per worker the parent
    # sends the next while the worker sends its reply. A blocking send on either side hangs.
    root = tmp_path / "root"
    root.mkdir()
    old, young = long_named_files(root, 6_000)
    manifest = tmp_path / "manifest.jsonl"
    # A subprocess with a deadline: a hang is a failure, not a stuck test session.
    args = [str(root), "--max-age-days", "30", "--processes", str(processes), "--no-dry-run"]
    done = run_cli(*args, "--task-batch-size", "1000", "--manifest", str(manifest), timeout=60)
    assert done.returncode == 0, done.stderr
    assert snapshot(root) == young
    recorded = {json.loads(line)["path"] for line in manifest.read_text().splitlines()}
    assert {f"file:{path}" for path in recorded} == old
    stats = final(done.stdout)
    assert stats["files_purged"] == len(old)
    assert stats["files_scanned"] == len(old) + len(young)


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("cap", [1, 999, 1000, 1001, 2500])
def test_max_delete_is_exact_with_batches_in_flight(tmp_path, cap, threads):
    # Several batches per worker hold --max-delete slots at once (two with one thread, five
    # with four: a network filesystem's shape): what one does not use goes back to the other
    # files, and the cap is never passed nor missed.
    root = tmp_path / "root"
    root.mkdir()
    for d in range(4):
        (root / f"d{d}").mkdir()
        for i in range(1_000):
            make_file(root / f"d{d}" / f"f{i:04d}", old=i % 4 != 0)
    before = len(os.listdir(root / "d0")) * 4
    run = purge(root, processes=3, io_threads=threads, dry_run=False, max_delete=cap)
    left = sum(len(os.listdir(root / f"d{d}")) for d in range(4))
    assert before - left == cap == run.stats["files_purged"]
    assert run.stats["stop_reason"] == "max_delete"


def test_the_command_exits_with_every_line_written(tmp_path):
    # The command skips the interpreter's teardown (os._exit): whatever is still buffered for
    # stdout must be written first. In text mode to a file (fully buffered): 3,000 DEBUG
    # lines, then the summary's tables, down to the last border.
    root = tmp_path / "root"
    root.mkdir()
    for i in range(3_000):
        make_file(root / f"f{i:04d}", old=i % 2 == 0)
    out = tmp_path / "out.txt"
    args = [str(root), "--max-age-days", "30", "--no-dry-run", "--log-level", "DEBUG"]
    with out.open("w") as sink:
        done = subprocess.run(
            [EFSPURGE, *args, "--log-format", "text"],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert sum("Deleted file" in line for line in lines) == 1_500 == 3_000 - len(os.listdir(root))
    assert "Deleted, by age" in lines[-6] and lines[-1].startswith("└")


# --- the pipeline under cancellation (the walk aborting, a caller's timeout around the API) ---


def file_rules(is_expired, dry_run: bool = False, **more) -> FileRules:
    """The rules of a worker under test: this age test, no age report."""
    return FileRules(
        is_expired=is_expired,
        timestamp=lambda st: st.st_mtime_ns,
        age_edges=[],
        dry_run=dry_run,
        stopped=StopFlag(),
        **more,
    )


def slow_expired(st: os.stat_result) -> bool:
    time.sleep(0.02)  # a 20-file batch takes ~0.4 s in the worker
    return True


@pytest.fixture
def one_worker(tmp_path):
    """One worker process, and directories a (20 files), b (7) and c (200), all 'expired'."""
    for name, count in (("a", 20), ("b", 7), ("c", 200)):
        (tmp_path / name).mkdir()
        for i in range(count):
            (tmp_path / name / f"f{i:03d}").touch()
    pool = WorkerPool(1, file_rules(slow_expired))
    yield tmp_path, pool
    pool.close()


async def batch(pool: WorkerPool, root: Path, name: str):
    fd = os.open(root / name, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = sorted(os.listdir(root / name))
        return await pool.workers[0].run([fd], [FileJob(names, name)], None)
    finally:
        os.close(fd)


async def two_in_flight(pool: WorkerPool, root: Path, second: str = "b"):
    first = asyncio.create_task(batch(pool, root, "a"))
    await asyncio.sleep(0.1)
    then = asyncio.create_task(batch(pool, root, second))
    await asyncio.sleep(0.1)  # a runs in the worker, the second waits on the socket
    return first, then


def test_a_cancelled_batch_never_takes_another_batchs_reply(one_worker):
    root, pool = one_worker

    async def main():
        first, then = await two_in_flight(pool, root)
        first.cancel()  # cancelled while waiting for its own reply
        return await asyncio.gather(first, then, return_exceptions=True)

    first, then = asyncio.run(main())
    assert isinstance(first, asyncio.CancelledError)
    assert then[0].scanned == then[0].purged == 7  # b's own reply, not a's
    assert not os.listdir(root / "b")


def test_cancelling_the_later_batch_keeps_the_earlier_ones_results(one_worker):
    root, pool = one_worker

    async def main():
        first, then = await two_in_flight(pool, root)
        then.cancel()
        return await asyncio.gather(first, then, return_exceptions=True)

    first, then = asyncio.run(main())
    assert isinstance(then, asyncio.CancelledError)
    assert first[0].purged == 20 and not os.listdir(root / "a")


def test_cancelling_every_batch_is_a_clean_cancellation(one_worker):
    root, pool = one_worker

    async def main():
        first, then = await two_in_flight(pool, root)
        first.cancel()
        then.cancel()  # what a TaskGroup does when the walk aborts
        return await asyncio.gather(first, then, return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results


def test_closing_the_pool_stops_a_batch_nobody_will_read(one_worker):
    # Both batches abandoned, then the pool closed: the queued batch of 200 files must not run
    # on, unrecorded; it ends at its next check of the stop flag (every 64 files).
    root, pool = one_worker

    async def main():
        first, then = await two_in_flight(pool, root, second="c")
        # The loop is busy elsewhere (a long listing step) while a's reply arrives: the worker
        # has moved on to c when the walk is cancelled.
        time.sleep(0.6)
        first.cancel()
        then.cancel()
        await asyncio.gather(first, then, return_exceptions=True)
        pool.close()

    asyncio.run(main())
    assert len(os.listdir(root / "c")) >= 200 - 64


# --- workers with threads (a network filesystem): batches run at once, answered in any order ---


def test_a_worker_with_threads_runs_its_batches_at_once_and_each_reply_finds_its_batch(tmp_path):
    # Each batch's first age test waits at a barrier for the other batch's: run one after
    # the other, the first would wait alone until the barrier breaks (an error reply). b is
    # the shorter, so its reply tends to come first: each reply must reach its own batch.
    for name, count in (("a", 300), ("b", 10)):
        (tmp_path / name).mkdir()
        for i in range(count):
            (tmp_path / name / f"f{i:03d}").touch()
    meet = threading.Barrier(2, timeout=10)
    waited = threading.local()

    def expired_together(st: os.stat_result) -> bool:
        if not getattr(waited, "done", False):
            waited.done = True
            meet.wait()
        return True

    pool = WorkerPool(1, file_rules(expired_together), threads=2)
    try:

        async def main():
            return await asyncio.gather(batch(pool, tmp_path, "a"), batch(pool, tmp_path, "b"))

        a, b = asyncio.run(main())
    finally:
        pool.close()
    assert (a[0].scanned, a[0].purged, b[0].scanned, b[0].purged) == (300, 300, 10, 10)
    assert not os.listdir(tmp_path / "a") and not os.listdir(tmp_path / "b")


@pytest.mark.parametrize("threads", [1, 2])
def test_a_reply_that_cannot_be_sent_fails_its_batch_instead_of_hanging(tmp_path, threads):
    # A manifest line that pickle cannot carry: the worker cannot send the reply. Its batch
    # must fail (the run stops as an internal error), not wait for ever for a reply.
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").touch()
    # A manifest line that is not a string: pickle cannot carry it.
    rules = file_rules(lambda st: True, dry_run=True, write_manifest=lambda rel, st: lambda: rel)
    pool = WorkerPool(1, rules, threads=threads)
    try:

        async def main():
            return await asyncio.wait_for(batch(pool, tmp_path, "a"), timeout=20)

        with pytest.raises((EOFError, RuntimeError, ConnectionError)):
            asyncio.run(main())
    finally:
        pool.close()


def test_a_fast_reply_finds_its_batch_even_before_the_send_returns(tmp_path, monkeypatch):
    # A worker with threads can answer a small batch before the parent's task resumes after
    # sending it (the loop is busy, the send ended in a partial write). Here the gap is made
    # wide on purpose: the reply must still reach its batch, not break the worker.
    from efspurge import workers

    for name in ("y", "b"):
        (tmp_path / name).mkdir()
    (tmp_path / "y" / "slow").write_text("1234567")  # y stays in the worker: replies are due
    for i in range(3):
        (tmp_path / "b" / f"f{i}").touch()

    def expired(st: os.stat_result) -> bool:
        if st.st_size == 7:
            time.sleep(1.0)
        return True

    real_send = workers._send_async

    async def late_send(*args):
        await real_send(*args)
        await asyncio.sleep(0.3)  # b's reply arrives meanwhile

    monkeypatch.setattr(workers, "_send_async", late_send)
    pool = WorkerPool(1, file_rules(expired), threads=4)
    try:

        async def main():
            y = asyncio.create_task(batch(pool, tmp_path, "y"))
            await asyncio.sleep(0.1)
            b = await batch(pool, tmp_path, "b")
            return await y, b

        y, b = asyncio.run(main())
    finally:
        pool.close()
    assert (y[0].purged, b[0].purged) == (1, 3)
    assert not os.listdir(tmp_path / "b") and not os.listdir(tmp_path / "y")


SLOW_BATCHES = """
import sys, time
from efspurge import cli, filepurge
purge_files = filepurge.purge_files
def slow(*args, **kwargs):  # a slow network filesystem: batches pile up in the workers
    time.sleep(0.2)
    return purge_files(*args, **kwargs)
filepurge.purge_files = slow
sys.exit(cli.main(sys.argv[1:]))
"""


def test_workers_with_threads_fit_ulimit_64(tmp_path):
    # Each chunk in flight is a descriptor in the worker (one per batch, even for chunks of
    # the same directory); 64 threads per worker would hold 65 of them and the kernel would
    # drop some in transit under `ulimit -n 64`. The walk's descriptor budget bounds them.
    root = tmp_path / "root"
    for d in range(4):
        for i in range(2_000):
            make_file(root / f"d{d}" / f"f{i:04d}", old=i % 4 != 0)
    args = ["--processes", "2", "--io-threads", "64", "--task-batch-size", "50", "--no-dry-run"]
    result = subprocess.run(
        ["prlimit", "--nofile=64:64", sys.executable, "-c", SLOW_BATCHES, str(root), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert final(result.stdout)["files_purged"] == 6_000
    assert sum(len(os.listdir(root / f"d{d}")) for d in range(4)) == 2_000


SLOW_UNLINKS = """
import sys, time
from efspurge import cli, fsops
unlink_file = fsops.unlink_file
def slow(*args):  # 2 ms a file: a network filesystem's round trip
    time.sleep(0.002)
    unlink_file(*args)
fsops.unlink_file = slow
sys.exit(cli.main(sys.argv[1:]))
"""


def _files_left(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def _workers_once_deleting(proc: subprocess.Popen, root: Path, below: int) -> list[int]:
    """The worker processes' pids, once fewer than ``below`` files are left under ``root``
    (the workers are deleting, batches queued in them), however slow the machine."""
    workers: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            workers = [int(pid) for pid in f.read().split()]
        if workers and _files_left(root) < below:
            break
        time.sleep(0.05)
    assert workers
    return workers


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_stop_when_the_parent_is_killed(tmp_path):
    # SIGKILL (the OOM killer, `timeout -s KILL`) leaves no parent to record anything: the
    # workers' queued batches must not go on deleting. Each batch in flight stops at its next
    # check (every 64 files), so at most 4 threads x 64 files go after the kill.
    root = tmp_path / "root"
    for d in range(2):
        for i in range(3_000):
            make_file(root / f"d{d}" / f"f{i:04d}", old=True)
    args = ["--processes", "2", "--io-threads", "4", "--task-batch-size", "500", "--no-dry-run"]
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_UNLINKS, str(root), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        workers = _workers_once_deleting(proc, root, 6_000)
        time.sleep(0.3)  # a little more: batches queued in the workers
        left_at_kill = sum(len(os.listdir(root / f"d{d}")) for d in range(2))
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers and not any(_alive(pid) for pid in workers)
    finally:
        proc.kill()
    assert 0 < left_at_kill < 6_000
    left = sum(len(os.listdir(root / f"d{d}")) for d in range(2))
    assert left_at_kill - left <= 4 * 64


@pytest.mark.parametrize(("threads", "until_stop"), [(1, 64), (4, 1)])
def test_a_stop_ends_a_batch_at_its_next_check(tmp_path, threads, until_stop):
    # The stop flag is read every 64 files with one thread (a local disk: microseconds a
    # file) and before every file with threads (each file a round trip, seconds when the
    # directory's unlinks queue): a stop asked at the first file ends the batch at the next
    # check, and the files after it stay.
    from dataclasses import replace

    from efspurge import filepurge
    from efspurge.plan import build_plan
    from efspurge.settings import Settings

    for i in range(200):
        make_file(tmp_path / f"f{i:03d}", old=True)
    settings = Settings(path=str(tmp_path), io_threads=threads, processes=1, dry_run=False)
    plan = build_plan(settings, str(tmp_path), os.stat(tmp_path), "nfs4", time.time_ns())
    is_expired = plan.file_rules.is_expired

    def expired_and_stop(st: os.stat_result) -> bool:
        plan.stop.set()  # SIGTERM arrives while the batch runs
        return is_expired(st)

    rules = replace(plan.file_rules, is_expired=expired_and_stop)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = filepurge.purge_files(fd, sorted(os.listdir(tmp_path)), rules, None, None)
    finally:
        os.close(fd)
    assert result.purged == until_stop and result.kept
    assert len(os.listdir(tmp_path)) == 200 - until_stop


def test_a_worker_killed_outright_is_named_and_the_run_stops(tmp_path):
    # The OOM killer or a SIGKILL on a worker: the run cannot know what its batch in flight
    # deleted (docs/safety.md). It must stop (exit 3) and say which process died and how,
    # not report a broken pipe (found by review).
    root = tmp_path / "root"
    for d in range(2):
        for i in range(3_000):
            make_file(root / f"d{d}" / f"f{i:04d}", old=True)
    args = ["--processes", "2", "--task-batch-size", "500", "--no-dry-run"]
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_UNLINKS, str(root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        workers = _workers_once_deleting(proc, root, 5_800)
        os.kill(workers[0], 9)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 3, err[-2000:]
    (critical,) = [r for r in records(out) if r["level"] == "CRITICAL"]  # once, not per batch
    assert f"worker process {workers[0]} killed by SIGKILL" in critical["extra_fields"]["error"]
    assert final(out)["interrupted"] is True


def test_a_worker_killed_by_a_real_time_signal_does_not_hang_the_run(tmp_path):
    # signal.Signals has no name for 34-64: naming the death must not fail, or the batches
    # waiting for that worker's replies would wait for ever (found by review).
    root = tmp_path / "root"
    for i in range(3_000):
        make_file(root / f"f{i:04d}", old=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_UNLINKS, str(root), "--processes", "2", "--no-dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        workers = _workers_once_deleting(proc, root, 2_900)
        os.kill(workers[0], signal.SIGRTMIN + 6)
        out, err = proc.communicate(timeout=60)  # before the fix: no end
    finally:
        proc.kill()
    assert proc.returncode == 3, err[-2000:]
    (critical,) = [r for r in records(out) if r["level"] == "CRITICAL"]
    assert f"killed by signal {int(signal.SIGRTMIN) + 6}" in critical["extra_fields"]["error"]


@pytest.mark.parametrize("when", ["max_runtime", "SIGTERM"])
def test_a_worker_that_stops_answering_cannot_keep_the_run_from_ending(tmp_path, when):
    """A worker process stopped (SIGSTOP, a frozen cgroup) or stuck in a system call never
    answers: the run went on past --max-runtime and a SIGTERM, with no final record, until
    the orchestrator's SIGKILL (found by review). Now a worker that has not answered 10 s
    after the stop is killed, and the run ends with its record and exit 3 (its batch may be
    missing from the counts and the manifest)."""
    root = tmp_path / "root"
    for d in range(60):
        for f in range(100):
            make_file(root / f"d{d:02d}" / f"f{f:03d}", old=f % 2 == 0)
    args = [EFSPURGE, str(root), "--max-age-days", "30", "--processes", "2"]
    args += ["--max-ops-per-second", "4000", "--manifest", str(tmp_path / "m.jsonl")]
    if when == "max_runtime":
        args += ["--max-runtime", "1.5s"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EFSPURGE_")}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    started = time.monotonic()
    time.sleep(0.8)  # under way: the worker has batches in flight
    [worker] = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    os.kill(int(worker), signal.SIGSTOP)
    if when == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=40)
    finally:
        with_worker = Path(f"/proc/{worker}").exists()
        if proc.poll() is None:
            proc.kill()
        if with_worker:
            os.kill(int(worker), signal.SIGKILL)
    took = time.monotonic() - started
    assert took < 30  # the stop, 10 s of grace, the kill (or the 10 s wait for its exit)
    lines = records(out)
    assert lines[-1]["message"] == "Purge operation completed"
    assert lines[-1]["extra_fields"]["stop_reason"] == when
    assert not with_worker  # killed and reaped
    old_left = sum(1 for p in root.rglob("f*") if int(p.name[1:]) % 2 == 0)
    deleted = 60 * 50 - old_left
    recorded = len((tmp_path / "m.jsonl").read_text().splitlines())
    if any(r["message"] == "Worker process did not stop: killed" for r in lines):
        # Killed with a batch in flight: its files may be deleted unrecorded; exit 3 says so.
        assert proc.returncode == 3 and recorded <= deleted
    else:
        # Stopped between batches: nothing was in flight, and the record is whole.
        assert proc.returncode == (5 if when == "max_runtime" else 143)
        assert recorded == deleted


def test_the_parents_thread_shares_the_files_and_the_cap_stays_exact(tmp_path):
    # When the worker falls behind (slow unlinks), the parent's own thread takes file batches
    # too, several small directories' in one call, with the --max-delete slots shared between
    # them in order: exactly the cap is deleted, only old files, and the young ones all stay.
    root = tmp_path / "root"
    old, young = set(), set()
    for d in range(60):
        for i in range(6):
            path = make_file(root / f"d{d:02d}" / f"f{i}", old=i % 3 != 0)
            (old if i % 3 else young).add(str(path.relative_to(root)))
    args = ["--processes", "2", "--task-batch-size", "10", "--max-delete", "150", "--no-dry-run"]
    result = subprocess.run(
        [sys.executable, "-c", SLOW_UNLINKS, str(root), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    stats = final(result.stdout)
    assert result.returncode == 4 and stats["stop_reason"] == "max_delete", result.stderr[-2000:]
    left = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert young <= left
    assert len(old - left) == stats["files_purged"] == 150


SERIAL_UNLINKS = """
import sys, threading, time
from efspurge import cli, fsops
unlink_file = fsops.unlink_file
lock = threading.Lock()
def slow(*args):  # a directory whose unlinks queue on its lock, 6 s each (a throttled server)
    with lock:
        time.sleep(6)
        unlink_file(*args)
fsops.unlink_file = slow
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_slow_worker_that_goes_on_is_waited_for_after_a_stop(tmp_path):
    """After a SIGTERM, a worker's two threads each finish the file they are on: one at 6 s,
    the other, queued behind it on the directory's lock, at 12 s, past the 10 s grace. The
    worker was killed at 10 s as if stuck (exit 3, its last deletion missing from the counts
    and the manifest; found by review). Its stop checks are heartbeats now: it is waited for,
    and the record is whole."""
    root = tmp_path / "root"
    for i in range(6):
        make_file(root / "d" / f"f{i}", old=True)
    manifest = tmp_path / "m.jsonl"
    args = [str(root), "--processes", "2", "--io-threads", "2", "--task-batch-size", "2"]
    args += ["--no-dry-run", "--manifest", str(manifest)]
    proc = subprocess.Popen(
        [sys.executable, "-c", SERIAL_UNLINKS, *args], stdout=subprocess.PIPE, text=True
    )
    time.sleep(2)  # both threads of the worker have started a file
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    stats = final(out)
    assert proc.returncode == 143 and stats["stop_reason"] == "SIGTERM"
    deleted = 6 - len(os.listdir(root / "d"))
    assert deleted == stats["files_purged"] == len(manifest.read_text().splitlines()) == 2
    assert not any(r["message"] == "Worker process did not stop: killed" for r in records(out))


def test_stuck_workers_are_waited_for_within_one_deadline(tmp_path):
    # Three stopped workers cost 3 x 20 s one after the other: past a 60 s termination grace
    # (found by review). They are waited for, and killed, within one deadline.
    from efspurge.workers import _reap_all

    pids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGSTOP)
            os._exit(0)
        pids.append(pid)
    try:
        started = time.monotonic()
        assert _reap_all(pids, 1.0) == pids  # none exits: all three are still there...
        assert time.monotonic() - started < 2.0  # ...after one second, not three
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        assert _reap_all(pids, 5.0) == []
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
