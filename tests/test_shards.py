"""Scale-out: N shards as separate processes over one tree delete exactly what one run does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import pytest
from conftest import EFSPURGE, age_dirs, final, make_file, purge, snapshot
from hypothesis import given
from hypothesis import strategies as st

from efspurge.shard import Shard, child_key, shard_of

# --- the partition ----------------------------------------------------------------------------


@given(
    path=st.lists(
        st.text(min_size=1, max_size=12).filter(lambda t: "/" not in t and "\\0" not in t),
        min_size=1,
        max_size=5,
    ),
    count=st.integers(min_value=1, max_value=16),
)
def test_every_file_has_exactly_one_owner(path, count):
    key = 0
    for part in path[:-1]:
        key = child_key(key, part)
    owners = [i for i in range(count) if Shard(i, count).owns_file(key, path[-1])]
    assert len(owners) == 1


def test_partition_is_stable_across_processes():
    # The key is the CRC-32 of the path bytes, which every zlib computes alike; Python's
    # salted hash() would give each process (each shard!) another partition.
    assert child_key(child_key(0, "logs"), "app.log") == zlib.crc32(b"/logs/app.log")
    assert child_key(0, "caf\udce9") == zlib.crc32(b"/caf\xe9")  # undecodable bytes as on disk
    script = (
        "from efspurge.shard import child_key, shard_of\n"
        "print([shard_of(child_key(child_key(0, 'a'), f'f{i}'), 7) for i in range(50)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(outputs) == 1
    assert outputs.pop().strip() == str(
        [shard_of(child_key(child_key(0, "a"), f"f{i}"), 7) for i in range(50)]
    )


def test_one_big_directory_spreads_evenly():
    for count in (2, 4, 8):
        per_shard = Counter(
            shard_of(child_key(0, f"file-{i:08d}.tmp"), count) for i in range(40_000)
        )
        assert len(per_shard) == count
        assert max(per_shard.values()) < 1.1 * 40_000 / count


# --- real runs --------------------------------------------------------------------------------


def build(root: Path, shape: str) -> None:
    if shape == "flat":
        for i in range(600):
            make_file(root / "big" / f"file-{i:05d}", old=i % 3 != 0)
    else:
        for a in range(4):
            for b in range(4):
                for i in range(12):
                    make_file(root / f"a{a}" / f"b{b}" / f"f{i}", old=(a + i) % 4 != 0)
        for a in range(3):
            make_file(root / f"gone{a}" / "x" / "y" / "old", old=True)  # emptied by the purge
    (root / "empty" / "nested").mkdir(parents=True)  # empty before the run
    make_file(root / "young-dir-owner" / "new", old=False)
    age_dirs(root)


def run_shards(root: Path, count: int, parallel: bool) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EFSPURGE_")}
    argv = [EFSPURGE, str(root), "--remove-empty-dirs", "--max-empty-dirs-to-delete", "0"]
    procs, results = [], []
    for index in range(count):
        cmd = [*argv, "--shard-count", str(count), "--shard-index", str(index)]
        if parallel:
            procs.append(
                subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
                )
            )
        else:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            assert done.returncode == 0, done.stderr
            results.append(final(done.stdout))
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(final(out))
    return results


@pytest.mark.parametrize("shape", ["flat", "balanced"])
@pytest.mark.parametrize("count", [1, 2, 4])
@pytest.mark.parametrize("parallel", [True, False], ids=["concurrent", "one-after-another"])
def test_shards_together_delete_exactly_what_one_run_deletes(tmp_path, shape, count, parallel):
    reference, sharded = tmp_path / "reference", tmp_path / "sharded"
    build(reference, shape)
    shutil.copytree(reference, sharded, symlinks=True, copy_function=shutil.copy2)
    age_dirs(sharded)
    before = snapshot(reference)
    one = purge(reference, remove_empty_dirs=True, max_empty_dirs_to_delete=0)
    results = run_shards(sharded, count, parallel)
    after = snapshot(sharded)
    assert after == snapshot(reference)  # the union is exactly the unsharded result
    deleted_files = {e for e in before - after if e.startswith("file:")}
    removed_dirs = {e for e in before - after if e.startswith("dir:")}
    # No file was unlinked twice, no directory removed twice: the per-shard counts add up.
    assert (
        sum(r["files_purged"] for r in results) == len(deleted_files) == one.stats["files_purged"]
    )
    assert sum(r["empty_dirs_deleted"] for r in results) == len(removed_dirs)
    assert all(r["errors"] == 0 for r in results)
    assert [r["shard_index"] for r in sorted(results, key=lambda r: r["shard_index"])] == list(
        range(count)
    )
    if count > 1:
        assert all(0 < r["files_purged"] < len(deleted_files) for r in results)


def test_sharded_dry_run_counts_add_up(tmp_path):
    build(tmp_path, "balanced")
    before = snapshot(tmp_path)
    whole = purge(tmp_path, dry_run=True, remove_empty_dirs=True, max_empty_dirs_to_delete=0)
    parts = [
        purge(
            tmp_path,
            dry_run=True,
            remove_empty_dirs=True,
            max_empty_dirs_to_delete=0,
            shard_index=i,
            shard_count=3,
        )
        for i in range(3)
    ]
    assert snapshot(tmp_path) == before
    assert sum(p.stats["files_to_purge"] for p in parts) == whole.stats["files_to_purge"]
    assert sum(p.stats["files_scanned"] for p in parts) == whole.stats["files_scanned"]
