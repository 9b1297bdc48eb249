"""The engine on real temporary trees: what is deleted, what stays, what is counted."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import age_dirs, make_file, purge, snapshot


def build_mixed(root: Path) -> tuple[set[str], set[str]]:
    """A tree with old and new files at several depths. Returns (old files, everything)."""
    old = set()
    for rel in ["a.log", "d1/b.tmp", "d1/d2/c.dat", "d1/d2/d3/d4/deep.old", "d5/x"]:
        make_file(root / rel, old=True, size=10)
        old.add(f"file:{rel}")
    for rel in ["keep.log", "d1/keep", "d1/d2/d3/keep", "d6/new"]:
        make_file(root / rel, old=False, size=3)
    return old, snapshot(root)


def test_deletes_exactly_the_old_regular_files(tmp_path, mode):
    old, before = build_mixed(tmp_path)
    run = purge(tmp_path, **mode)
    assert snapshot(tmp_path) == before - old
    assert run.stats["files_purged"] == len(old) == run.stats["files_to_purge"]
    assert run.stats["files_scanned"] == 9
    assert run.stats["bytes_freed"] == 10 * len(old)
    assert run.stats["errors"] == 0
    assert run.code == 0


def test_dry_run_deletes_nothing_and_counts_what_a_real_run_does(tmp_path, mode):
    build_mixed(tmp_path)
    before = snapshot(tmp_path)
    age_dirs(tmp_path)
    dry = purge(tmp_path, dry_run=True, remove_empty_dirs=True, **mode)
    assert snapshot(tmp_path) == before
    assert dry.stats["files_purged"] == 0 and dry.stats["bytes_freed"] == 0
    age_dirs(tmp_path)
    real = purge(tmp_path, remove_empty_dirs=True, **mode)
    for key in ("files_scanned", "files_to_purge", "bytes_to_purge", "empty_dirs_to_delete"):
        assert dry.stats[key] == real.stats[key], key
    assert real.stats["files_purged"] == dry.stats["files_to_purge"]
    assert real.stats["empty_dirs_deleted"] == dry.stats["empty_dirs_to_delete"] == 2  # d4, d5


def test_age_boundary_is_strict(tmp_path):
    # A file exactly at the cutoff's side of "older than" stays; a second older goes.
    policy_days = 10
    now = __import__("time").time()
    make_file(tmp_path / "older", old=True)
    os.utime(tmp_path / "older", (now - policy_days * 86400 - 120,) * 2)
    make_file(tmp_path / "younger", old=False)
    os.utime(tmp_path / "younger", (now - policy_days * 86400 + 120,) * 2)
    purge(tmp_path, max_age_days=policy_days)
    assert snapshot(tmp_path) == {"file:younger"}


def test_fractional_days(tmp_path):
    now = __import__("time").time()
    make_file(tmp_path / "two_hours", old=False)
    os.utime(tmp_path / "two_hours", (now - 7200,) * 2)
    make_file(tmp_path / "ten_minutes", old=False)
    os.utime(tmp_path / "ten_minutes", (now - 600,) * 2)
    purge(tmp_path, max_age_days=1 / 24)  # one hour
    assert snapshot(tmp_path) == {"file:ten_minutes"}


def test_symlinks_are_never_followed_or_deleted(tmp_path, mode):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    make_file(outside / "precious", old=True)
    make_file(outside / "sub" / "precious2", old=True)
    make_file(root / "target", old=True)
    os.symlink(outside, root / "link_to_outside_dir")
    os.symlink(outside / "precious", root / "link_to_outside_file")
    os.symlink(root / "nowhere", root / "dangling")
    os.symlink("target", root / "link_to_old_file")
    # Make the symlinks themselves old, too: their own age must not matter.
    for name in ("link_to_outside_dir", "link_to_outside_file", "dangling", "link_to_old_file"):
        os.utime(root / name, (0, 0), follow_symlinks=False)
    age_dirs(root)
    run = purge(root, remove_empty_dirs=True, **mode)
    assert snapshot(outside) == {"file:precious", "dir:sub", "file:sub/precious2"}
    assert snapshot(root) == {
        "link:link_to_outside_dir",
        "link:link_to_outside_file",
        "link:dangling",
        "link:link_to_old_file",
    }
    assert run.stats["symlinks_skipped"] == 4
    assert run.stats["files_purged"] == 1


def test_root_reached_through_a_symlink_is_resolved_once(tmp_path):
    real = tmp_path / "real"
    make_file(real / "old", old=True)
    make_file(real / "new", old=False)
    os.symlink(real, tmp_path / "via")
    run = purge(tmp_path / "via")
    assert snapshot(real) == {"file:new"}
    assert os.path.islink(tmp_path / "via")
    assert run.stats["files_purged"] == 1


def test_special_files_are_skipped(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    os.utime(tmp_path / "fifo", (0, 0))
    run = purge(tmp_path)
    assert snapshot(tmp_path) == {"file:fifo"}
    assert run.stats["special_files_skipped"] == 1


def test_empty_dirs_cascade_children_before_parents_root_kept(tmp_path, mode):
    make_file(tmp_path / "a/b/c/d/old", old=True)
    (tmp_path / "e/f").mkdir(parents=True)  # empty before the run
    make_file(tmp_path / "g/h/keep", old=False)
    (tmp_path / "g/h/empty").mkdir()
    age_dirs(tmp_path)
    run = purge(tmp_path, remove_empty_dirs=True, max_empty_dirs_to_delete=0, **mode)
    assert snapshot(tmp_path) == {"dir:g", "dir:g/h", "file:g/h/keep"}
    assert run.stats["empty_dirs_deleted"] == 7
    assert tmp_path.is_dir()


def test_root_never_removed_even_when_emptied(tmp_path, mode):
    make_file(tmp_path / "only/old", old=True)
    age_dirs(tmp_path)
    purge(tmp_path, remove_empty_dirs=True, **mode)
    assert tmp_path.is_dir() and snapshot(tmp_path) == set()


def test_empty_dirs_untouched_without_the_flag(tmp_path, mode):
    make_file(tmp_path / "a/b/old", old=True)
    (tmp_path / "empty").mkdir()
    purge(tmp_path, **mode)
    assert snapshot(tmp_path) == {"dir:a", "dir:a/b", "dir:empty"}


def test_empty_dir_limit_is_exact_cascades_included(tmp_path, mode):
    for i in range(3):
        make_file(tmp_path / f"chain{i}/x/y/z/old", old=True)  # 4 removable dirs each
    age_dirs(tmp_path)
    run = purge(tmp_path, remove_empty_dirs=True, max_empty_dirs_to_delete=4, **mode)
    remaining_dirs = {e for e in snapshot(tmp_path) if e.startswith("dir:")}
    assert run.stats["empty_dirs_deleted"] == 4
    assert len(remaining_dirs) == 12 - 4
    # Post-order: whatever was removed, no remaining directory lost a child it still needed,
    # i.e. every remaining directory's parent remains too.
    for entry in remaining_dirs:
        parent = os.path.dirname(entry.split(":", 1)[1])
        assert not parent or f"dir:{parent}" in remaining_dirs
    # The next run continues where this one stopped, although this run removed entries from
    # the remaining directories: their own timestamps were restored, so they are not "young".
    purge(tmp_path, remove_empty_dirs=True, max_empty_dirs_to_delete=0, **mode)
    assert snapshot(tmp_path) == set()


def test_dry_run_respects_the_empty_dir_limit(tmp_path):
    for i in range(5):
        (tmp_path / f"e{i}").mkdir()
    age_dirs(tmp_path)
    run = purge(tmp_path, dry_run=True, remove_empty_dirs=True, max_empty_dirs_to_delete=3)
    assert run.stats["empty_dirs_to_delete"] == 3
    assert len(snapshot(tmp_path)) == 5


def test_dir_with_young_file_is_kept(tmp_path, mode):
    make_file(tmp_path / "d/old", old=True)
    make_file(tmp_path / "d/new", old=False)
    age_dirs(tmp_path)
    purge(tmp_path, remove_empty_dirs=True, **mode)
    assert snapshot(tmp_path) == {"dir:d", "file:d/new"}


def test_wide_directory_streamed_in_batches(tmp_path, mode):
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(20_000):
        p = wide / f"f{i:05d}"
        p.touch()
        if i % 2 == 0:
            os.utime(p, (0, 0))
    age_dirs(tmp_path)
    run = purge(tmp_path, remove_empty_dirs=True, **{**mode, "task_batch_size": 1000})
    left = sorted(os.listdir(wide))
    assert left == [f"f{i:05d}" for i in range(1, 20_000, 2)]
    assert run.stats["files_purged"] == 10_000
    assert run.stats["files_scanned"] == 20_000


def test_deep_tree_of_1000_levels(deep_tmp, mode):
    tmp_path = deep_tmp
    path = tmp_path
    for i in range(1000):
        path = path / f"l{i}"
    # Build it fd-relative: the full path is longer than PATH_MAX.
    fd = os.open(tmp_path, os.O_RDONLY)
    for i in range(1000):
        os.mkdir(f"l{i}", dir_fd=fd)
        nfd = os.open(f"l{i}", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    leaf = os.open("old", os.O_CREAT | os.O_WRONLY, dir_fd=fd)
    os.close(leaf)
    os.utime("old", (0, 0), dir_fd=fd)
    os.close(fd)
    age_dirs(tmp_path)
    run = purge(tmp_path, remove_empty_dirs=True, max_empty_dirs_to_delete=0, **mode)
    assert run.stats["files_purged"] == 1
    assert run.stats["empty_dirs_deleted"] == 1000
    assert os.listdir(tmp_path) == []


def test_deep_tree_with_few_descriptors_closes_and_reopens(deep_tmp, monkeypatch):
    tmp_path = deep_tmp
    # A descriptor budget of 8: directories give their descriptors back while their children
    # run, and are reopened (down from the root, or through '..' to remove a child), each
    # checked by identity. The result must be the same as with descriptors to spare.
    import efspurge.plan as plan_mod
    from efspurge import fsops

    monkeypatch.setattr(plan_mod, "raise_fd_limit", lambda: 0)  # the budget's floor: 8
    reopened = []
    real_open_parent, real_reopen = fsops.open_parent, fsops.reopen
    monkeypatch.setattr(
        fsops, "open_parent", lambda *a: reopened.append("..") or real_open_parent(*a)
    )
    monkeypatch.setattr(fsops, "reopen", lambda *a: reopened.append("down") or real_reopen(*a))
    monkeypatch.setattr(fsops, "areopen", fsops.wrap(fsops.reopen))
    fd = os.open(tmp_path, os.O_RDONLY)
    for i in range(300):
        os.mkdir("d", dir_fd=fd)
        os.mkdir("side", dir_fd=fd)  # a second child: the parent has work left after the first
        if i % 50 == 0:
            f = os.open("keep" if i == 100 else "old", os.O_CREAT | os.O_WRONLY, dir_fd=fd)
            os.close(f)
            if i != 100:
                os.utime("old", (0, 0), dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    before_fds = len(os.listdir("/proc/self/fd"))
    run = purge(tmp_path, remove_empty_dirs=True, max_empty_dirs_to_delete=0)
    assert len(os.listdir("/proc/self/fd")) == before_fds  # nothing leaked
    # 'keep' lives in the directory at depth 100: the 200 below it are emptied and removed,
    # and every 'side' directory (300) goes too.
    assert run.stats["empty_dirs_deleted"] == 200 + 300
    depth = 0
    p = str(tmp_path)
    while os.path.isdir(os.path.join(p, "d")):
        p = os.path.join(p, "d")
        assert not os.path.exists(os.path.join(p, "side"))
        depth += 1
    assert depth == 100
    assert os.path.exists(os.path.join(p, "keep"))
    assert run.stats["errors"] == 0 and run.stats["dirs_skipped_changed"] == 0
    assert reopened, "the test must exercise reopening closed directories"


ODD_NAMES = [
    "space in name",
    "new\nline",
    "tab\tname",
    "ünïcödé-名前-🙂",
    "-starts-with-dash",
    "*glob?[chars]",
    "a" * 255,
    ".hidden",
]


def test_odd_names(tmp_path, mode):
    for name in ODD_NAMES:
        make_file(tmp_path / "old" / name, old=True)
        make_file(tmp_path / "new" / name, old=False)
    raw = os.fsencode(tmp_path / "old") + b"/undecodable-\xff\xfe"
    with open(raw, "wb"):
        pass
    os.utime(raw, (0, 0))
    run = purge(tmp_path, **mode)
    assert os.listdir(tmp_path / "old") == []
    assert sorted(os.listdir(tmp_path / "new")) == sorted(ODD_NAMES)
    assert run.stats["files_purged"] == len(ODD_NAMES) + 1


def test_rerun_is_idempotent(tmp_path, mode):
    build_mixed(tmp_path)
    age_dirs(tmp_path)
    purge(tmp_path, remove_empty_dirs=True, **mode)
    after_first = snapshot(tmp_path)
    second = purge(tmp_path, remove_empty_dirs=True, **mode)
    assert snapshot(tmp_path) == after_first
    assert second.stats["files_purged"] == 0 and second.stats["empty_dirs_deleted"] == 0


def test_no_descriptor_leak(tmp_path, mode):
    build_mixed(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    age_dirs(tmp_path)
    purge(tmp_path, remove_empty_dirs=True, **mode)
    assert len(os.listdir("/proc/self/fd")) == before


def test_timestamps_of_kept_directories_are_not_rewritten(tmp_path, mode):
    # Touch nothing but what you delete: a directory the run deleted inside keeps the times the
    # kernel gave it (an application's write into it meanwhile must not be rewound).
    make_file(tmp_path / "d" / "old", old=True)
    make_file(tmp_path / "d" / "new", old=False)
    (tmp_path / "d" / "gone").mkdir()
    age_dirs(tmp_path)
    before = os.stat(tmp_path / "d")
    run = purge(tmp_path, remove_empty_dirs=True, **mode)
    assert run.stats["files_purged"] == 1 and run.stats["empty_dirs_deleted"] == 1
    after = os.stat(tmp_path / "d")
    assert after.st_mtime_ns > before.st_mtime_ns
