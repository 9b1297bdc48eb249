"""The work queue and the memory guard: back-pressure that can never hang the run."""

from __future__ import annotations

import threading

from conftest import make_file, purge, snapshot

from efspurge.workqueue import WorkQueue


def run_workers(queue: WorkQueue, handle, workers: list[threading.Thread]) -> None:
    def loop():
        queue.worker_started()
        try:
            while (taken := queue.get()) is not None:
                item, grant = taken
                try:
                    handle(item)
                finally:
                    # A listing gives its grant back; these chunks were queued directly
                    # (not from a listing), so they hold no budget.
                    queue.done(grant)
        finally:
            queue.worker_exited()

    def spawn() -> bool:
        t = threading.Thread(target=loop)
        workers.append(t)
        t.start()
        return True

    queue._spawn = spawn  # the queue starts its workers through this hook


def make_queue(max_workers=4, batch=10, budget=40) -> WorkQueue:
    return WorkQueue(
        max_workers=max_workers, listing_reservation=batch, entry_budget=budget, spawn=lambda: False
    )


def test_all_work_is_done_and_every_worker_exits():
    queue = make_queue()
    done, workers = [], []
    exited = threading.Event()
    queue.on_all_exited(exited.set)
    run_workers(queue, done.append, workers)
    queue.put(dirs=[f"dir{i}" for i in range(20)], chunks=[f"chunk{i}" for i in range(20)])
    assert exited.wait(10)
    assert sorted(done) == sorted([f"dir{i}" for i in range(20)] + [f"chunk{i}" for i in range(20)])
    assert queue.finished and queue.alive == 0
    assert 1 <= len(workers) <= 4
    assert queue.stats().entries_outstanding == 0  # every grant was given back


def test_paused_discovery_still_finishes():
    """Paused listing with nothing else running must not wait forever for memory to drop."""
    queue = make_queue()
    queue.set_paused(True)
    done, workers = [], []
    exited = threading.Event()
    queue.on_all_exited(exited.set)
    run_workers(queue, done.append, workers)
    queue.put(dirs=[f"dir{i}" for i in range(5)])
    assert exited.wait(10), "the queue hung while discovery was paused"
    assert sorted(done) == [f"dir{i}" for i in range(5)]


def test_chunks_run_while_discovery_is_paused():
    queue = make_queue(max_workers=1)
    queue.set_paused(True)
    order, workers = [], []
    exited = threading.Event()
    queue.on_all_exited(exited.set)
    run_workers(queue, order.append, workers)
    queue.put(dirs=["dir-a"], chunks=["chunk-a", "chunk-b"])
    assert exited.wait(10)
    assert order[:2] == ["chunk-b", "chunk-a"]  # deletion first; the listing only when forced
    assert order[2] == "dir-a"


def test_stop_releases_every_waiting_worker():
    queue = make_queue(max_workers=3)
    release = threading.Event()
    workers: list[threading.Thread] = []
    exited = threading.Event()
    queue.on_all_exited(exited.set)
    run_workers(queue, lambda item: release.wait(10), workers)
    queue.put(dirs=[f"dir{i}" for i in range(10)])
    queue.stop()
    release.set()
    assert exited.wait(10)
    assert len(queue.drain()) > 0  # what was not handed out is returned for cleanup


def test_memory_guard_pauses_but_the_run_completes(tmp_path):
    for d in range(20):
        for i in range(50):
            make_file(tmp_path / f"d{d}" / f"f{i}", old=i % 2 == 0)
    # A limit far below the interpreter's own size: the guard is over the limit all the time.
    run = purge(tmp_path, memory_limit_mb=1, io_threads=4, task_batch_size=8)
    assert run.stats["memory_backpressure_events"] >= 1
    assert run.stats["files_purged"] == 500
    assert sum(1 for e in snapshot(tmp_path) if e.startswith("file:")) == 500
    assert any(r["message"].startswith("Memory over the limit") for r in run.log)
