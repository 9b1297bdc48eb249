"""The per-file batch (efspurge.filepurge.purge_files) on a real directory: the --max-delete
slots and the stop flag, which end the loop in the middle of a batch; and several
directories' batches in one call (purge_dirs), which share the slots."""

from __future__ import annotations

import os
import time

from conftest import make_file

from efspurge.filepurge import FileRules, purge_dirs, purge_files
from efspurge.policy import AgePolicy
from efspurge.stats import age_edges


def _rules(dry_run: bool = False, **kwargs) -> FileRules:
    now = time.time_ns()
    policy = AgePolicy.from_days(30, now_ns=now)
    return FileRules(
        is_expired=policy.is_expired,
        timestamp=policy.timestamp,
        age_edges=age_edges(now),
        dry_run=dry_run,
        **kwargs,
    )


def _tree(tmp_path, pattern: str) -> list[str]:
    """One file per letter of ``pattern``: o = old, y = young. Returns the names in order."""
    names = []
    for i, kind in enumerate(pattern):
        name = f"{i:02d}-{kind}"
        make_file(tmp_path / name, old=kind == "o")
        names.append(name)
    return names


def test_slots_run_out_mid_batch_the_rest_is_refused_and_stays(tmp_path):
    names = _tree(tmp_path, "oyoyooyoyo")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        out = purge_files(fd, names, _rules(), 3, None)
    finally:
        os.close(fd)
    # The first three old files (00, 02, 04) used the three slots; the next old one (05) and
    # every name after it go back undecided, and stay on disk.
    assert out.purged == out.slots_used == out.selected == 3
    assert out.refused == names[5:]
    assert sorted(os.listdir(tmp_path)) == sorted(n for n in names if n not in names[:5:2])
    assert out.scanned == 5  # 00-04 decided; 05 is not counted until it is decided
    assert out.ops == 6 + 3  # lstat of 00-05, unlink of three
    assert out.kept  # young files stay


def test_the_stop_flag_is_read_between_runs_of_names(tmp_path):
    names = _tree(tmp_path, "oooooo")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    reads = []

    def stopped() -> bool:
        reads.append(1)
        return len(reads) > 2  # stop before the third run

    try:
        out = purge_files(fd, names, _rules(stopped=stopped, stop_check_mask=1), None, None)
    finally:
        os.close(fd)
    # Runs of two names: two runs deleted, then the stop leaves the rest for the next run.
    assert out.purged == 4 and out.ops == 4 + 4
    assert sorted(os.listdir(tmp_path)) == names[4:]
    assert out.kept and not out.refused


def test_a_whole_batch_without_a_cap_or_a_stop(tmp_path):
    names = _tree(tmp_path, "oyoyo")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        out = purge_files(fd, names, _rules(stop_check_mask=1), None, None)
    finally:
        os.close(fd)
    assert out.purged == 3 and out.scanned == 5 and out.ops == 5 + 3
    assert sorted(os.listdir(tmp_path)) == [names[1], names[3]]


def test_a_name_listed_twice_is_refused_from_where_the_cap_stopped(tmp_path):
    # A listing can show a name twice while the directory changes (NFS); the cap must refuse
    # from the position it stopped at, not from the name's first appearance (found by review).
    names = _tree(tmp_path, "oo")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        out = purge_files(fd, [names[0], names[1], names[0]], _rules(dry_run=True), 2, None)
    finally:
        os.close(fd)
    assert out.selected == 2 and out.refused == [names[0]] and out.ops == 3


def test_directories_in_one_call_share_the_slots_in_order(tmp_path):
    # The loop's single thread takes many small directories' files in one call: the
    # --max-delete slots granted to the call go to the directories in order, and the first
    # old file past the last slot, and every name after it, stay on disk undecided.
    dirs, fds = [], []
    for index, pattern in enumerate(("ooy", "yoo", "oo")):
        path = tmp_path / f"d{index}"
        path.mkdir()
        dirs.append((path, _tree(path, pattern)))
        fds.append(os.open(path, os.O_RDONLY | os.O_DIRECTORY))
    try:
        jobs = [(fd, names, path.name) for fd, (path, names) in zip(fds, dirs, strict=True)]
        results = purge_dirs(jobs, _rules(), 3)
    finally:
        for fd in fds:
            os.close(fd)
    assert [r.purged for r in results] == [2, 1, 0]
    assert [r.refused for r in results] == [[], ["02-o"], ["00-o", "01-o"]]
    assert sorted(os.listdir(dirs[0][0])) == ["02-y"]
    assert sorted(os.listdir(dirs[1][0])) == ["00-y", "02-o"]
    assert sorted(os.listdir(dirs[2][0])) == ["00-o", "01-o"]
