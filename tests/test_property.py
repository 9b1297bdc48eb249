"""Property test: random trees, random ages, symlinks and empty directories, compared with a
simple model of what must be deleted."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from conftest import NEW, OLD, purge, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NAMES = st.sampled_from(["a", "b", "c", "d", "e", "x y", "ü", "-n"])

# A tree: dict name -> ("file", old) | ("link", target_is_dir) | ("fifo",) | ("dir", subtree)
tree_strategy = st.recursive(
    st.dictionaries(
        NAMES,
        st.one_of(
            st.tuples(st.just("file"), st.booleans()),
            st.tuples(st.just("link"), st.booleans()),
        ),
        max_size=4,
    ),
    lambda children: st.dictionaries(NAMES, st.tuples(st.just("dir"), children), max_size=4),
    max_leaves=25,
)


def build(path: Path, tree: dict, outside: Path) -> None:
    for name, spec in tree.items():
        target = path / name
        if spec[0] == "file":
            target.write_text("x")
            stamp = OLD if spec[1] else NEW
            os.utime(target, (stamp, stamp))
        elif spec[0] == "link":
            os.symlink(outside if spec[1] else outside / "f", target)
            os.utime(target, (0, 0), follow_symlinks=False)
        else:
            target.mkdir()
            build(target, spec[1], outside)
            os.utime(target, (OLD, OLD))  # an old directory, as on a real purge target


def model(tree: dict, prefix: str, remove_empty: bool) -> tuple[set[str], bool]:
    """What remains below prefix, and whether the directory ends up empty."""
    remains: set[str] = set()
    for name, spec in tree.items():
        rel = f"{prefix}{name}"
        if spec[0] == "file":
            if not spec[1]:
                remains.add(f"file:{rel}")
        elif spec[0] == "link":
            remains.add(f"link:{rel}")
        else:
            sub, empty = model(spec[1], rel + "/", remove_empty)
            if not (remove_empty and empty):
                remains |= sub | {f"dir:{rel}"}
    return remains, not remains


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tree=tree_strategy,
    remove_empty=st.booleans(),
    dry_run=st.booleans(),
    threads=st.sampled_from([1, 4]),
    batch=st.sampled_from([1, 2, 5000]),
    shards=st.sampled_from([1, 3]),
)
def test_result_matches_the_model(tree, remove_empty, dry_run, threads, batch, shards):
    if not isinstance(tree, dict) or any(not isinstance(v, tuple) for v in tree.values()):
        return
    with tempfile.TemporaryDirectory() as tmp:
        outside = Path(tmp) / "outside"
        outside.mkdir()
        (outside / "f").write_text("precious")
        os.utime(outside / "f", (0, 0))
        root = Path(tmp) / "root"
        root.mkdir()
        build(root, tree, outside)
        before = snapshot(root)
        # With shards, every shard runs in turn over the same tree (as N workers would); the
        # counts of all shards together must match one run.
        runs = [
            purge(
                root,
                remove_empty_dirs=remove_empty,
                max_empty_dirs_to_delete=0,
                dry_run=dry_run,
                io_threads=threads,
                task_batch_size=batch,
                shard_index=index,
                shard_count=shards,
            )
            for index in range(shards)
        ]
        stats = {
            key: sum(r.stats[key] for r in runs)
            for key in ("files_to_purge", "empty_dirs_to_delete", "errors")
        }
        expected, _ = model(tree, "", remove_empty)
        assert snapshot(outside) == {"file:f"}
        if dry_run:
            assert snapshot(root) == before
        else:
            assert snapshot(root) == expected
        removed_files = {e for e in before - expected if e.startswith("file:")}
        removed_dirs = {e for e in before - expected if e.startswith("dir:")}
        assert stats["files_to_purge"] == len(removed_files)
        assert stats["empty_dirs_to_delete"] == len(removed_dirs)
        assert stats["errors"] == 0
