"""A directory swapped for a symlink to outside the root, over and over, while the tool runs."""

from __future__ import annotations

import os
import threading

import pytest
from conftest import age_dirs, make_file, purge, snapshot

from efspurge import fsops


def test_swapping_a_subdirectory_for_a_symlink_never_reaches_outside(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    for i in range(200):
        make_file(outside / f"precious{i}", old=True)
        make_file(outside / "nested" / f"precious{i}", old=True)
    spare = tmp_path / "spare"
    saw_the_swap = 0
    for round_ in range(15):
        for i in range(100):
            make_file(root / f"d{i % 5}" / "victim" / f"old{i}", old=True)
        age_dirs(root)
        stop = threading.Event()

        def swapper(stop=stop):
            # rename(2) is atomic: at every instant the name is either the real directory
            # or a symlink to outside.
            link_tmp = root / "d0" / "victim.link"
            while not stop.is_set():
                try:
                    os.rename(root / "d0" / "victim", spare)
                    os.symlink(outside, link_tmp)
                    os.rename(link_tmp, root / "d0" / "victim")
                    os.unlink(root / "d0" / "victim")
                    os.rename(spare, root / "d0" / "victim")
                except FileNotFoundError:
                    pass

        thread = threading.Thread(target=swapper)
        thread.start()
        try:
            mode = {"io_threads": 8, "task_batch_size": 16} if round_ % 2 else {"io_threads": 1}
            run = purge(root, remove_empty_dirs=True, **mode)
            saw_the_swap += run.stats["symlinks_skipped"] + run.stats["dirs_skipped_changed"]
        finally:
            stop.set()
            thread.join()
        assert len(os.listdir(outside)) == 201, f"round {round_}: something outside was deleted"
        assert len(os.listdir(outside / "nested")) == 200
        # Clean up for the next round.
        if os.path.islink(root / "d0" / "victim"):
            os.unlink(root / "d0" / "victim")
        if spare.exists():
            # d0 itself may be gone: the swapper can leave it momentarily empty, and an
            # empty directory is rightly removed.
            (root / "d0").mkdir(exist_ok=True)
            os.rename(spare, root / "d0" / "victim")
    assert snapshot(outside) >= {"file:precious0", "file:nested/precious0"}
    assert saw_the_swap, "the swapper never raced the walk: the test proved nothing"


@pytest.mark.parametrize("processes", [1, 2])
def test_a_directory_recreated_after_its_walk_is_not_removed(tmp_path, monkeypatch, processes):
    # An application renames the directory away and makes a new one of the same name after
    # the walk emptied it, before its rmdir: the new one was never looked at (and may be in
    # use); it stays, as does the walked one, now elsewhere (found by review).
    root, aside = tmp_path / "root", tmp_path / "aside"
    make_file(root / "d/old", old=True)
    make_file(root / "e/old", old=True)
    age_dirs(root)
    walked_d = os.stat(root / "d").st_ino
    real_unlink = fsops.unlink_file

    def unlink_then_recreate(dir_fd, name, dry_run):
        real_unlink(dir_fd, name, dry_run)
        if os.fstat(dir_fd).st_ino == walked_d:  # d's last file: d is empty now
            os.rename(root / "d", aside)
            os.mkdir(root / "d")

    monkeypatch.setattr(fsops, "unlink_file", unlink_then_recreate)  # forked workers too
    run = purge(root, remove_empty_dirs=True, processes=processes)
    assert snapshot(root) == {"dir:d"}  # the new d stays; e, emptied and walked, is removed
    assert os.stat(root / "d").st_ino != walked_d
    assert aside.is_dir() and not any(aside.iterdir())  # the walked d, moved: not followed
    assert run.stats["dirs_skipped_changed"] == 1 and run.stats["empty_dirs_deleted"] == 1
